"""The `infinistar` command line: parsing, validation, progress and messages only."""
