"""Action recognition data: class-per-folder videos, their datamodule, and generated motion videos."""
