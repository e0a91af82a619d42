"""End offsets checked by a fetch, against the real broker (streams/offsets.py).

The batch is what matters: Tansu's ListOffsets answered the last batch's base
offset + 1, and faust's table recovery crashed or stopped short on that figure.
"""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from omnichat.settings import Settings
from streams import offsets
from streams.topics import bootstrap_servers


async def test_the_end_counts_every_record_of_the_last_batch(settings: Settings) -> None:
    servers = bootstrap_servers(settings.broker_url)
    topic = f"end-offsets-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    full, empty = TopicPartition(topic, 0), TopicPartition(topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=50)
    await producer.start()
    try:
        for size in (1, 3, 7):  # each group of sends lingers into one batch
            futures = [await producer.send(topic, b"v", partition=0) for _ in range(size)]
            sent = [await f for f in futures]
            assert [r.offset for r in sent] == list(range(sent[0].offset, sent[0].offset + size))
            ends = await offsets.end_offsets(servers, [full, empty])
            assert ends == {full: sent[-1].offset + 1, empty: 0}
    finally:
        await producer.stop()
