"""The secured local broker serves SCRAM-SHA-512 over TLS and nothing else."""

import pytest

from hookrun.dev.kafka_net import broker_answers
from hookrun.dev.kafka_secure import SecureKafka
from hookrun.events.security import KafkaAccessDenied, check_access


async def test_the_secured_broker_serves_only_scram_sha_512_over_tls(
    secure_kafka: SecureKafka,
) -> None:
    assert secure_kafka.answers()
    await check_access(secure_kafka.bootstrap, secure_kafka.security())

    # neither a plaintext client nor another SASL mechanism gets in
    assert not broker_answers(secure_kafka.bootstrap)
    sha256 = secure_kafka.security().model_copy(update={"sasl_mechanism": "SCRAM-SHA-256"})
    with pytest.raises(KafkaAccessDenied, match="SCRAM-SHA-256"):
        await check_access(secure_kafka.bootstrap, sha256)
