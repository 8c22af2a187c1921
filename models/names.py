"""Names of the models this code base can load, importable without torch (the API checks options against them)."""
DENOISERS = ("ffdnet",)
CAPTIONERS = ("attention", "blip")  # blip: opt-in, transformers and a local weights folder
ENSEMBLES = (1, 2, 4, 8)  # the denoiser's geometric self-ensemble sizes
PRECISIONS = ("auto", "float32")  # auto: the reduced precision the device runs natively (models.precision)
