"""The training engine shared by train_tfod and train_maskrcnn: presets, hyperparameters, Model
Garden configs, the resumable training run."""
