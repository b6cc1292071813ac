"""Root test configuration: the real-Kafka fixtures shared by every test folder."""

# kafka_bootstrap (session broker), new_topic (test-<uuid> topics), spare_kafka (a broker the
# test may stop), the auto `kafka` marker and the summary line all live in the plugin, so that
# services and benchmarks can reuse them; sub-folder conftests add their own fixtures.
pytest_plugins = ["hookrun.dev.pytest_kafka"]
