"""The core: CLIP encoding, cached vectors, images, gap adapters, the CLOSE model, LMs, the training
loop, metrics and the task readers. Each module holds one idea; none imports a workflow, an
experiment or the command line (``tests/test_layers.py`` keeps it so)."""
