"""Finding pretrained weights on this machine, never downloading them: the one weight finder every
component uses (backbones, rankers, metrics).

- diffusers pipelines (:func:`load_pipeline`): a local model folder, a single checkpoint file (its
  configuration from a local folder or the local model cache), or a model id in the local Hugging Face cache;
- plain checkpoint files (:func:`find_weights`, :func:`load_checkpoint`): an explicit path from the config,
  else a list of places such as the torch hub cache (:func:`hub_checkpoints_dir`).

Whatever is missing raises :class:`~realfill.errors.MissingWeightsError` naming every place looked and how
to provide the weights; a path the user gave that does not fit is a one-line :class:`UserError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub import constants

from realfill.errors import MissingWeightsError, UserError

# -- the local caches -----------------------------------------------------------------------------------


def hub_cache_dir() -> str:
    """The local Hugging Face model cache (``HF_HUB_CACHE``), read at each call (tests point it elsewhere)."""
    return constants.HF_HUB_CACHE


def cache_place(model: str) -> str:
    """How an error names the place a model id was looked for."""
    return f"the local model cache {hub_cache_dir()} for '{model}'"


def hub_checkpoints_dir() -> Path:
    """Where torch.hub (and kornia, torchvision) cache downloaded checkpoints: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


# -- plain checkpoint files --------------------------------------------------------------------------------


def find_weights(what: str, key: str, explicit: str | Path | None, places: Sequence[Path], how: str) -> Path:
    """The first existing file: ``explicit`` (the config key ``key``) if set, else the first of ``places``.

    An explicit path that does not exist is a typo to fix, not a reason to look elsewhere: a one-line
    :class:`UserError` naming the key. Nothing found anywhere: :class:`MissingWeightsError` naming every place.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UserError(f"{key}: {path}: no such file ({what}); fix the path, or unset it to look in: "
                            + "; ".join(str(p) for p in places))
        return path
    for place in places:
        if place.is_file():
            return place
    raise MissingWeightsError(what, [f"{key} (not set)"] + [str(p) for p in places], how)


def load_checkpoint(path: Path, key: str) -> dict:
    """A checkpoint's tensors (``torch.load`` with ``weights_only=True``); unreadable: one line naming it."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise UserError(f"{key}: {path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None


def load_learned_weights(module, state: dict, path: Path, key: str) -> None:
    """Load ``state`` (a checkpoint's tensors) into ``module``; every learned parameter must come from the file
    (buffers may not). A file of another model is one line naming ``key`` (the config key) and ``path``."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: another model's file
        raise UserError(f"{key}: {path}: does not fit {type(module).__name__} ({str(exc).splitlines()[0]})") from None
    parameters = dict(module.named_parameters())
    missing = [k for k in result.missing_keys if k in parameters]
    if missing:
        raise UserError(
            f"{key}: {path}: not a {type(module).__name__} checkpoint ({len(missing)} weights missing, "
            f"e.g. {missing[0]})"
        )


# -- diffusers pipelines -------------------------------------------------------------------------------------


def load_pipeline(pipeline_class, *, what: str, model: str, default_model: str, variant: str | None,
                  dtype: torch.dtype, config: str | None = None, extra: dict | None = None,
                  aliases: tuple[str, ...] = (), how: str | None = None, single_file=None):
    """``pipeline_class`` from ``model``: a diffusers model folder, a single ``.safetensors``/``.ckpt`` file
    (described by ``config``, a diffusers model folder or a model id in the local cache; default
    ``default_model``), or a model id in the local cache. Never downloads. ``aliases``: other hub ids of the
    same weights, also looked for in the cache when ``model`` (or a single file's ``config``) is
    ``default_model`` (a model moved on the hub: SD2 inpainting from stabilityai to sd2-community). Raises
    :class:`MissingWeightsError` naming every place looked and ``how`` to provide the weights (default: `hf
    download` and backbone.model). ``single_file(pipeline_class, what=, path=, config=, dtype=, extra=)``
    loads a single file where the whole-pipeline ``from_single_file`` does not fit (FLUX's transformer file)."""
    warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)

    extra = dict(extra or {})
    path = Path(model).expanduser()
    places: list[str] = []
    how = how or (f"Download them once where there is network (`hf download {default_model}` fills the local "
                  f"model cache), or copy a diffusers model folder or a single checkpoint file here and pass "
                  f"--set backbone.model=PATH")
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"backbone.model: {path} is a folder without model_index.json; give a diffusers "
                            "model folder (as saved by save_pretrained) or a single checkpoint file")
        try:
            return pipeline_class.from_pretrained(str(path), torch_dtype=dtype, variant=variant,
                                                  local_files_only=True, **extra)
        except (OSError, ValueError) as exc:
            raise UserError(f"backbone.model: {path} could not be loaded as {pipeline_class.__name__} ({exc})") from None
    if path.is_file():
        if single_file is not None:
            return single_file(pipeline_class, what=what, path=path, config=config or default_model, dtype=dtype,
                               extra=extra)
        configs = [config] if config else [default_model, *aliases]
        return load_single_file(pipeline_class, what=what, path=path, configs=configs, dtype=dtype, extra=extra)
    if path.suffix in (".safetensors", ".ckpt") or model.startswith((".", "/", "~")):
        places.append(f"{path} (no such file or folder)")
    else:
        for model_id in [model, *(aliases if model == default_model else ())]:
            places.append(cache_place(model_id))
            try:
                return pipeline_class.from_pretrained(model_id, torch_dtype=dtype, variant=variant,
                                                      local_files_only=True, **extra)
            except (OSError, ValueError):
                pass
    raise MissingWeightsError(what, places, how)


def single_file_config_folder(config: str) -> tuple[str | None, str]:
    """The local diffusers model folder that ``config`` names (a folder, or a model id whose
    ``model_index.json`` is in the local cache) and the place looked; ``(None, place)`` when there is none.
    Resolving it here, never by a model id, keeps ``from_single_file`` from falling back to a download."""
    from huggingface_hub import try_to_load_from_cache  # on use: its module adds 0.3 s to every start-up

    folder = Path(config).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise UserError(f"backbone.config: {folder} is a folder without model_index.json; give the diffusers "
                            "model folder (as saved by save_pretrained) whose configuration the single file has")
        return str(folder), str(folder)
    if folder.exists():
        raise UserError(f"backbone.config: {folder} is a file; give a diffusers model folder or a model id")
    if config.startswith((".", "/", "~")) or config.count("/") != 1:
        return None, f"{folder} (no such folder)"
    place = cache_place(config)
    cached = try_to_load_from_cache(config, "model_index.json")
    if isinstance(cached, str):
        return str(Path(cached).parent), place
    return None, place


def load_single_file(pipeline_class, *, what: str, path, configs: list[str], dtype: torch.dtype, extra: dict,
                     modules: Sequence[str] | None = None):
    """``pipeline_class.from_single_file`` on ``path`` with the configuration the first of ``configs`` that
    resolves names, checked: every weight of ``modules`` (the pipeline's components of those names, in that
    order; None: every ``nn.Module`` component it has) must come from the file. A backbone family passes its
    own layout (``sd_family.SINGLE_FILE_MODULES``)."""
    places = []
    for config in configs:
        folder, place = single_file_config_folder(config)
        places.append(place)
        if folder is not None:
            break
    if folder is None:
        how = (f"Set backbone.config to a diffusers model folder of the same architecture (--set "
               f"backbone.config=FOLDER), or fill the local model cache once where there is network (`hf "
               f"download {configs[0]} --include '*.json' --include '*.txt'` fetches only the configuration)")
        raise MissingWeightsError(what, places, how, missing=f"the configuration of the single file {path}")
    try:
        pipeline = pipeline_class.from_single_file(str(path), config=folder, torch_dtype=dtype,
                                                   local_files_only=True, **extra)
    except Exception as exc:  # a broken or foreign file fails in many ways (safetensors, pickle, shapes, keys)
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"backbone.model: {path} could not be loaded as a single {pipeline_class.__name__} file "
                        f"with the configuration in {folder} ({type(exc).__name__}: {reason})") from None
    names = modules if modules is not None else [name for name, part in pipeline.components.items()
                                                 if isinstance(part, torch.nn.Module)]
    for name in names:
        module = getattr(pipeline, name, None)
        absent = [key for key, tensor in module.state_dict().items() if tensor.is_meta] if module is not None else []
        if absent:  # diffusers loads leniently: what the file lacks would stay uninitialised
            raise UserError(f"backbone.model: {path} holds no {name} weights for {', '.join(absent[:3])}"
                            f"{' ...' if len(absent) > 3 else ''} ({len(absent)} missing): is it a checkpoint of "
                            f"the architecture in {folder}?")
    return pipeline
