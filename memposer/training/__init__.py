"""MemPoser training: LightningModule, metrics, callbacks, config loading and the train entry."""
