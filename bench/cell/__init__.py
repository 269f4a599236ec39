"""One experiment: its config, data, model, LightningModule and the one training path."""
