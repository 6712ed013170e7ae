"""On-disk formats, generators, ingest steps and the Parquet schemas."""
