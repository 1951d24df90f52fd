from minigpt4.tasks import emotion_eval, feature_dump, image_text_pretrain, mw_classification  # noqa: F401  (registers the tasks)
