"""The experiment harness: studies of many training runs that reproduce the
paper's tables and figures (`tables`, `table_study`) and measure how far
each optimizer's batch can grow (`batch_scaling`, `batch_scaling_study`),
with their learning-rate grids (`lr_grid`), their folder (`folder`), the
loop that trains their runs (`loop`) and their report (`report`).

Pure Python: nothing here imports Keras, so `apps.reproduce` checks its flags
and plans a study before anything loads TensorFlow; each run is trained by
a callable the app passes in (`loop.train_runs`).
"""
