"""The runtime layer: Faust, RocksDB, librdkafka and the processes around them."""
