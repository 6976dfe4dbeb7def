"""The dashboard's data side: REST client, models, demo data. Imports no Textual, so it can be
used (and tested, and benchmarked) without a terminal."""
