"""A test plugin file: an observer recording every lifecycle notification it receives."""

from realfill import hookimpl

EVENTS: list[tuple] = []


@hookimpl
def realfill_run_start(run_dir, config, scene):
    EVENTS.append(("run_start", run_dir, scene.name))


@hookimpl
def realfill_train_step_end(step, loss, learning_rates, seconds):
    EVENTS.append(("train_step_end", step, loss, dict(learning_rates), seconds))


@hookimpl
def realfill_validation_done(run_dir, step, path, images):
    EVENTS.append(("validation_done", run_dir, step, path, len(images)))


@hookimpl
def realfill_sampling_done(run_dir, sample_paths):
    EVENTS.append(("sampling_done", run_dir, list(sample_paths)))


@hookimpl
def realfill_ranking_done(run_dir, ranking):
    EVENTS.append(("ranking_done", run_dir, list(ranking)))


@hookimpl
def realfill_run_end(run_dir, result_path, error):
    EVENTS.append(("run_end", run_dir, result_path, error))
