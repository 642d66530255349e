"""CorrFlow pretraining data: colourisation clips from unlabelled videos and their datamodule."""
