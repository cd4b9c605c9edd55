"""On-disk dataset formats facetrain reads and writes without their original frameworks:
insightface RecordIO and TFRecord shards."""
