from minigpt4.tasks import feature_dump, image_text_pretrain, mw_classification  # noqa: F401  (registers the tasks)
