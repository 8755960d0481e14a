"""Benchmarks of the library's large-batch step, the optimizers' update and
training throughput, kept out of the installed packages: run them from the
repository root, `python -m benchmarks.bench_optimizer`. Their flag
mistakes end in one line, as the apps' do (`apps._cli`)."""
