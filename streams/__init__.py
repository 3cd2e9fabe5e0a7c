"""cdp-streams: a Kafka-native customer data platform core."""

__version__ = "0.1.0"
