"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: a file, a name or a config key the user can fix. Printed without a traceback."""


class UnknownComponentError(UserError, KeyError):
    """A component name that no plugin registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateComponentError(Exception):
    """Two plugins registered the same name for one role."""


class MissingWeightsError(UserError):
    """Pretrained weights (or what loading them needs: ``missing`` says what) were not found in any of the
    places looked at."""

    def __init__(self, what: str, places: list[str], how: str, missing: str = "weights"):
        self.what, self.places, self.how = what, places, how
        looked = "; ".join(places) if places else "nowhere"
        super().__init__(f"{what}: {missing} not found (looked in: {looked}). {how}")
