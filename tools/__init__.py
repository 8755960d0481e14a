"""Programs for the project's maintainers, kept out of the installed
packages: `make_sample` builds the packaged CIFAR-10 sample
(`sngm_keras/sample_data`) and `pytorch_reference` trains the paper's start
in PyTorch, an independent check of `apps.train`. Run them from the
repository root, `python -m tools.pytorch_reference`."""
