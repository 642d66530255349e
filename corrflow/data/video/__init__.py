"""Videos as every task reads them: finding sources (files, frame folders), decoding frames,
frame-folder records and the embedded sample videos."""
