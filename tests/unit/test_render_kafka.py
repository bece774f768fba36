"""Pure Kafka renderers: rows of Text cells; outside names never become markup."""

from __future__ import annotations

from rich.text import Text

from backends.kafka.model import (
    BrokerState,
    GroupState,
    KafkaStatus,
    PartitionLag,
    PartitionState,
    TopicState,
    count_partitions,
    tally_brokers,
)
from tui.render.kafka import (
    BROKER_COLUMNS,
    GROUP_COLUMNS,
    PARTITION_COLUMNS,
    TOPIC_COLUMNS,
    broker_rows,
    cluster_text,
    group_lag_rows,
    group_rows,
    partition_rows,
    topic_rows,
)

EVIL_TOPIC = "[bold red]pwn[/] [@click=app.quit]x[/]"
EVIL_GROUP = "[@click=app.bell]group[/]"


def make_status() -> KafkaStatus:
    partitions = (
        PartitionState(EVIL_TOPIC, 0, 1, (1, 2, 3), (1, 2, 3), 2),
        PartitionState(EVIL_TOPIC, 1, 2, (1, 2, 3), (1, 2), 2),
        PartitionState("ok", 0, -1, (1, 2, 3), (), 2),
    )
    brokers = tally_brokers(
        [BrokerState(1, "127.0.0.1", 9001, "[i]rack[/i]", reachable=True),
         BrokerState(2, "127.0.0.1", 9002, reachable=True),
         BrokerState(3, "127.0.0.1", 9003, registered=False)],
        partitions)
    return KafkaStatus(
        bootstrap="x", cluster_id="[b]cid[/b]", controller_id=2, brokers=brokers,
        topics=(TopicState(EVIL_TOPIC, partitions[:2], min_isr=2),
                TopicState("ok", partitions[2:], min_isr=2)),
        groups=(GroupState(EVIL_GROUP, "EMPTY", 0, (PartitionLag(EVIL_TOPIC, 0, 5, 9),)),),
        counts=count_partitions(partitions),
    )


def test_broker_rows():
    rows = broker_rows(make_status())
    assert [key for key, _ in rows] == ["1", "2", "3"]
    for _, cells in rows:
        assert len(cells) == len(BROKER_COLUMNS)
        assert all(isinstance(c, Text) for c in cells)
    one = [c.plain for c in rows[0][1]]
    assert one == ["1", "127.0.0.1:9001", "[i]rack[/i]", "up", "1", "3", "3"]
    assert rows[2][1][3].plain == "down"


def test_markup_like_names_are_rendered_literally():
    status = make_status()
    topic = topic_rows(status)
    assert topic[0][0] == EVIL_TOPIC
    assert topic[0][1][0].plain == EVIL_TOPIC
    assert topic[0][1][0].spans == []  # no style came from the name
    groups = group_rows(status)
    assert groups[0][1][0].plain == EVIL_GROUP
    lag = group_lag_rows(status.groups[0])
    assert lag[0][1][0].plain == f"{EVIL_TOPIC}-0"
    detail = cluster_text(status)
    assert "[b]cid[/b]" in detail.plain
    assert EVIL_GROUP in detail.plain
    # Nothing in any span carries a link/click meta (what markup would have produced).
    for text in [detail, *[c for _, cells in topic + groups for c in cells]]:
        for span in text.spans:
            assert "click" not in str(span.style)


def test_topic_and_partition_rows():
    status = make_status()
    topics = {key: [c.plain for c in cells] for key, cells in topic_rows(status)}
    assert len(next(iter(topics.values()))) == len(TOPIC_COLUMNS)
    assert topics["ok"][5] == "1"  # offline
    assert topics[EVIL_TOPIC][4] == "1"  # URP
    rows = partition_rows(status.topics[0])
    assert len(rows[0][1]) == len(PARTITION_COLUMNS)
    assert [c.plain for c in rows[1][1]] == [f"{EVIL_TOPIC}-1", "2", "1,2,3", "1,2",
                                           "under-replicated"]
    offline = partition_rows(status.topics[1])[0][1]
    assert offline[1].plain == "none" and offline[4].plain == "offline"


def test_group_rows_and_cluster_text():
    status = make_status()
    rows = group_rows(status)
    assert len(rows[0][1]) == len(GROUP_COLUMNS)
    assert [c.plain for c in rows[0][1]][1:] == ["EMPTY", "0", "4", "1"]
    text = cluster_text(status).plain
    assert "metadata controller (not the KRaft quorum leader): 2" in text
    assert "offline 1" in text and "URP 2" in text


def test_cluster_text_shows_what_an_election_would_fix():
    partitions = (
        PartitionState("t", 0, 3, (1, 2, 3), (1, 2, 3), 2),  # electable: 1 is in sync
        PartitionState("t", 1, 3, (2, 3, 1), (3, 1), 2),  # waits: 2 is not in sync
        PartitionState("t", 2, 3, (3, 1, 2), (3, 1, 2), 2),
    )
    brokers = tally_brokers([BrokerState(i, "127.0.0.1", 9000 + i, reachable=True)
                             for i in (1, 2, 3)], partitions)
    status = KafkaStatus(bootstrap="x", cluster_id="c", controller_id=1, brokers=brokers,
                         topics=(TopicState("t", partitions, min_isr=2),),
                         counts=count_partitions(partitions))
    text = cluster_text(status)
    assert "not on preferred leader 2 (1 electable now)" in text.plain
    assert "leader skew 3 (2 after elect-leaders), replica skew 0" in text.plain


def test_status_text_is_plain_and_strips_control_characters():
    from backends.kafka.model import summarize_status
    from tui.render.kafka import status_text

    evil = "t\x1b]0;pwned\x07"
    partitions = (PartitionState(evil, 0, 1, (1, 2), (1, 2), 1),)
    status = KafkaStatus(
        bootstrap="x", cluster_id="c\x1b[2J", controller_id=1,
        brokers=tally_brokers([BrokerState(1, "h", 9001, "r\x07", reachable=True),
                               BrokerState(2, "h", 9002, reachable=True)], partitions),
        topics=(TopicState(evil, partitions, min_isr=1),),
        groups=(GroupState("g\x1b[31m", "STABLE", 1, ()),),
        counts=count_partitions(partitions),
    )
    summary = summarize_status(status)
    text = status_text(status, summary, {"partitions": False})
    assert "metadata controller (not the KRaft quorum leader): 1" in text
    assert "g\\x1b[31m" in text and "partitions 1: online 1" in text
    assert evil not in text and "t\\x1b]0;pwned" not in text  # partitions only on request
    with_partitions = status_text(status, summary, {"partitions": True})
    assert "t\\x1b]0;pwned\\x07-0" in with_partitions
    for shown in (text, with_partitions):
        assert "\x1b" not in shown and "\x07" not in shown
