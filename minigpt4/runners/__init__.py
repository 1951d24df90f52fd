from minigpt4.runners import runner_base, runner_eval  # noqa: F401  (registers the runners)
