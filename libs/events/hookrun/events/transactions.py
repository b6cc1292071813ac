"""All-or-nothing appends: records that must be durable together, in Kafka transactions.

The gateway writes a launch's ``TriggerLaunched`` and its dedupe record this way, so that no
failure between the two (a crash, a send that fails) leaves a run without the record that maps
a redelivery to it (decision 0033). Consumers read with ``isolation_level=read_committed``
(:func:`hookrun.events.clients.consumer_settings`), so they never see an aborted half.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from hookrun.events import topics
from hookrun.events.clients import producer_settings
from hookrun.events.codec import Record
from hookrun.events.kafka import KafkaUnavailable, KeyHashPartitioner, send

log = logging.getLogger(__name__)

#: The coordinator aborts a transaction left open this long (its producer died and did not
#: come back under the same id, which aborts it at once). Read-committed consumers of the
#: partitions it wrote wait meanwhile, so it is short; it must exceed the longest a healthy
#: commit takes, which the send timeout bounds.
MIN_TRANSACTION_TIMEOUT_S = 10.0


def _new_outcome() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    # A caller that timed out no longer awaits it: its failure counts as seen.
    done.add_done_callback(lambda f: f.cancelled() or f.exception())
    return done


@dataclass
class _Group:
    records: Sequence[Record]
    done: asyncio.Future[None] = field(default_factory=_new_outcome)


def transactional_id(namespace: str, service: str, instance: str) -> str:
    """``<namespace>.<service>.<hostname>.<instance>``: stable across a restart of one instance.

    A restarted instance that takes the same id fences its previous incarnation and aborts the
    transaction that one left open, instead of letting consumers wait for the timeout. Two live
    instances must never share an id (they would fence each other), hence the host name and an
    instance name unique on the host (the gateway's port).
    """
    return f"{namespace}.{service}.{socket.gethostname()}.{instance}"


class TransactionalPublisher:
    """Appends groups of records, each group all-or-nothing, through one transactional producer.

    A producer runs one transaction at a time, so groups that arrive while one commits go
    together into the next one (group commit): a launch waits for at most one commit ahead of
    its own. A failed or timed-out transaction fails every group in it, and the producer is
    replaced by one with the same transactional id, whose start fences the old one and settles
    (aborts, or completes if it was committing) what it left open.
    """

    def __init__(
        self,
        bootstrap: str,
        service: str,
        transactional_id: str,
        *,
        send_timeout_s: float = 10.0,
        namespace: str = topics.NAMESPACE,
    ) -> None:
        self.namespace = namespace
        self.transactional_id = transactional_id
        timeout_s = max(MIN_TRANSACTION_TIMEOUT_S, 2 * send_timeout_s)
        self._settings = producer_settings(
            bootstrap, service, request_timeout_ms=int(send_timeout_s * 1000)
        ) | {
            "transactional_id": transactional_id,
            "transaction_timeout_ms": int(timeout_s * 1000),
        }
        self._send_timeout_s = send_timeout_s
        self._partitioner = KeyHashPartitioner()
        self._pending: list[_Group] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def ready(self) -> bool:
        """True while a producer is connected and its transactions initialised."""
        return self._ready.is_set()

    async def start(self) -> None:
        """Begin connecting (retrying while Kafka is down) and committing in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for group in self._pending:
            if not group.done.done():
                group.done.set_exception(KafkaUnavailable("publisher stopped"))
        self._pending.clear()

    async def append(self, records: Sequence[Record], *, timeout_s: float) -> None:
        """Return once every record is committed; raise :class:`KafkaUnavailable` otherwise.

        On a timeout the group may still commit later (the transaction's end is unknown): the
        caller must treat that as "maybe", as it treats an unacknowledged send.
        """
        group = _Group(records)
        self._pending.append(group)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(group.done)
        except TimeoutError as exc:
            raise KafkaUnavailable("kafka did not commit the transaction in time") from exc

    async def _run(self) -> None:
        while True:
            producer = await self._connect()
            try:
                await self._commit_forever(producer)
            except (KafkaError, TimeoutError) as exc:
                log.warning("transaction failed (%r); replacing the producer", exc)
            except Exception:
                log.exception("transaction failed; replacing the producer")
            finally:
                self._ready.clear()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._send_timeout_s):
                        await producer.stop()

    async def _connect(self) -> AIOKafkaProducer:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(**self._settings, partitioner=self._partitioner)
            try:
                # start() initialises the transactions: fences an older producer of this id.
                async with asyncio.timeout(max(self._send_timeout_s, 5.0)):
                    await producer.start()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                if not isinstance(exc, KafkaError | TimeoutError):
                    raise
                log.warning("transactional producer not ready (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._ready.set()
            return producer

    async def _commit_forever(self, producer: AIOKafkaProducer) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Groups whose caller gave up already are left out: they were answered 503.
            groups = [g for g in self._pending if not g.done.done()]
            self._pending.clear()
            if not groups:
                continue
            try:
                async with asyncio.timeout(self._send_timeout_s):
                    await self._commit(producer, groups)
            except BaseException as exc:
                failure = KafkaUnavailable(f"kafka did not commit: {exc!r}")
                for group in groups:
                    if not group.done.done():
                        group.done.set_exception(failure)
                raise
            for group in groups:
                if not group.done.done():
                    group.done.set_result(None)

    async def _commit(self, producer: AIOKafkaProducer, groups: list[_Group]) -> None:
        await producer.begin_transaction()
        acks: list[asyncio.Future[Any]] = []
        for group in groups:
            for record in group.records:
                acks.append(
                    await send(producer, topics.named(record.topic, self.namespace), record)
                )
        # Acknowledged first: committing with sends in flight costs a wait in aiokafka.
        # Every outcome is collected, so no failed send is left "never retrieved".
        for outcome in await asyncio.gather(*acks, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        await producer.commit_transaction()
