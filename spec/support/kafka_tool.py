#!/usr/bin/python3
"""What the specs do to a real Kafka broker that kcat cannot: create topics,
change a topic's config, read a group's committed offsets, and fence a
transactional producer.  Through Debian's python3-confluent-kafka (librdkafka).

  kafka_tool.py create BOOT TOPIC PARTITIONS [KEY=VALUE ...]
  kafka_tool.py alter BOOT TOPIC KEY=VALUE ...
  kafka_tool.py committed BOOT GROUP TOPIC    # "PARTITION OFFSET" lines (-1: none)
  kafka_tool.py fence BOOT TRANSACTIONAL_ID   # init_transactions with that id
  kafka_tool.py describe BOOT TOPIC           # "partitions N" and "cleanup.policy P" lines

Exit status 1 with the reason on stderr when the broker refuses.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

TIMEOUT = 30


def configs(pairs):
    out = {}
    for p in pairs:
        k, _, v = p.partition("=")
        out[k] = v
    return out


def create(boot, topic, partitions, *pairs):
    admin = AdminClient({"bootstrap.servers": boot})
    fs = admin.create_topics([NewTopic(topic, int(partitions), 1, config=configs(pairs))],
                             operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    fs[topic].result()
    # the topic is there once its metadata shows every partition with a leader
    c = Consumer({"bootstrap.servers": boot, "group.id": "kafka-tool"})
    try:
        for _ in range(100):
            md = c.list_topics(topic, timeout=TIMEOUT).topics.get(topic)
            if md and md.error is None and len(md.partitions) == int(partitions) and \
                    all(p.leader >= 0 for p in md.partitions.values()):
                return
            time.sleep(0.1)
        raise SystemExit("kafka_tool: topic %s has no leaders yet" % topic)
    finally:
        c.close()


def alter(boot, topic, *pairs):
    admin = AdminClient({"bootstrap.servers": boot})
    # alter_configs replaces the topic's whole dynamic config
    res = ConfigResource("topic", topic, set_config=configs(pairs))
    for f in admin.alter_configs([res], request_timeout=TIMEOUT).values():
        f.result()


def committed(boot, group, topic):
    # read_uncommitted: the offsets committed so far, without waiting for a
    # transaction still open (require_stable) to end
    c = Consumer({"bootstrap.servers": boot, "group.id": group, "isolation.level": "read_uncommitted",
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=TIMEOUT).topics[topic]
        tps = [TopicPartition(topic, p) for p in sorted(md.partitions)]
        for tp in c.committed(tps, timeout=TIMEOUT):
            if tp.error:
                raise KafkaException(tp.error)
            print(tp.partition, tp.offset if tp.offset >= 0 else -1)
    finally:
        c.close()


def fence(boot, txn_id):
    p = Producer({"bootstrap.servers": boot, "transactional.id": txn_id, "log_level": 3})
    p.init_transactions(TIMEOUT)


def describe(boot, topic):
    admin = AdminClient({"bootstrap.servers": boot})
    # every topic: asking for this one could create it (auto.create.topics.enable)
    md = admin.list_topics(timeout=TIMEOUT).topics.get(topic)
    if md is None or md.error is not None:
        raise SystemExit("kafka_tool: no topic %s (%s)" % (topic, md.error if md else "not listed"))
    print("partitions", len(md.partitions))
    res = ConfigResource("topic", topic)
    for f in admin.describe_configs([res], request_timeout=TIMEOUT).values():
        print("cleanup.policy", f.result()["cleanup.policy"].value)


def main(argv):
    cmds = {"create": create, "alter": alter, "committed": committed, "fence": fence, "describe": describe}
    if len(argv) < 3 or argv[1] not in cmds:
        sys.exit(__doc__)
    try:
        cmds[argv[1]](*argv[2:])
    except KafkaException as e:
        sys.exit("kafka_tool %s: %s" % (argv[1], e))


if __name__ == "__main__":
    main(sys.argv)
