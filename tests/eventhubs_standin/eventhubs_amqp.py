"""A local stand-in of the Event Hubs AMQP service, for the AMQP input's tests.

It answers what the Azure SDK for Rust (azure_messaging_eventhubs 0.15) asks of Event Hubs,
as the components reference records it: SASL ANONYMOUS; `$cbs` put-token (a token the test
token endpoint did not issue, one not starting with `tok-`, is refused with 401);
`$management` READ of the hub and of each partition; receive links per partition with the
selector filter echoed, honouring its start (offset or sequence number, `>` or `>=`,
`-1` for the earliest and `@latest`), and events carrying `x-opt-sequence-number`,
`x-opt-offset` and `x-opt-enqueued-time`.

Messages come from an NDJSON file of {"hub", "partition", "body"} lines that the test may
append to while the stand-in runs: new lines are read every 0.2 s and sent to the receivers
of their partition. It does not model epochs, throttling or retention.

    python3 eventhubs_amqp.py --listen 127.0.0.1:15671 --messages messages.ndjson --partitions 4
"""
import argparse
import json
import re
import sys
import time

from proton import Array, Data, Endpoint, Message, UNDESCRIBED, symbol
from proton import timestamp as Timestamp
from proton.handlers import MessagingHandler
from proton.reactor import Container

FILTER = re.compile(r"x-opt-(offset|sequence-number|enqueued-time)\s*(>=?)\s*'([^']*)'")


def selector(data):
    """The text of a source's selector filter (a described string in a map)."""
    data.rewind()
    if not data.next():
        return ""
    return str(data.get_object())


class Partition:
    def __init__(self):
        self.events = []  # (sequence, offset, enqueued ms, body)

    def start_index(self, filter_text):
        m = FILTER.search(filter_text or "")
        if not m:
            return len(self.events)
        what, op, value = m.groups()
        if value == "-1":
            return 0
        if value == "@latest":
            return len(self.events)
        key = {"offset": 1, "sequence-number": 0, "enqueued-time": 2}[what]
        limit = int(value)
        for i, e in enumerate(self.events):
            if e[key] > limit or (op == ">=" and e[key] == limit):
                return i
        return len(self.events)


class EventHubs(MessagingHandler):
    def __init__(self, listen, messages, partitions):
        super().__init__()
        self.listen, self.messages = listen, messages
        self.partition_ids = [str(i) for i in range(partitions)]
        self.hubs = {}  # hub -> {pid: Partition}
        self.read_lines = 0
        self.receivers = []  # sender links reading a partition

    def partition(self, hub, pid):
        parts = self.hubs.setdefault(hub, {p: Partition() for p in self.partition_ids})
        return parts.setdefault(pid, Partition())

    def on_start(self, event):
        event.container.listen(self.listen)
        self.load()
        event.container.schedule(0.2, self)

    def on_timer_task(self, event):
        self.load()
        self.feed()
        event.container.schedule(0.2, self)

    def load(self):
        try:
            with open(self.messages, encoding="utf-8") as f:
                lines = f.read().split("\n")
        except FileNotFoundError:
            return
        # The last piece may be a line still being written.
        complete = lines[:-1]
        for line in complete[self.read_lines:]:
            if line.strip():
                m = json.loads(line)
                part = self.partition(m["hub"], str(m["partition"]))
                seq = len(part.events)
                part.events.append((seq, seq * 1024, int(time.time() * 1000), m["body"].encode()))
        self.read_lines = len(complete)

    def feed(self):
        alive = []
        for link in self.receivers:
            if link.state & Endpoint.LOCAL_CLOSED or link.state & Endpoint.REMOTE_CLOSED:
                continue
            alive.append(link)
            part = self.partition(link.hub, link.pid)
            while link.credit > 0 and link.cursor < len(part.events):
                seq, offset, enqueued, body = part.events[link.cursor]
                msg = Message(body=body, inferred=True)
                msg.annotations = {
                    symbol("x-opt-sequence-number"): seq,
                    symbol("x-opt-offset"): str(offset),
                    symbol("x-opt-enqueued-time"): Timestamp(enqueued),
                }
                link.send(msg)
                link.cursor += 1
        self.receivers = alive

    def on_link_opening(self, event):
        link = event.link
        if link.is_sender:
            address = link.remote_source.address or ""
            link.source.copy(link.remote_source)  # the address and the selector filter
            if address not in ("$cbs", "$management"):
                # amqps://<namespace>/<hub>/ConsumerGroups/<group>/Partitions/<id>
                pieces = address.split("/")
                link.hub, link.pid = pieces[3], pieces[-1]
                filter_text = selector(link.remote_source.filter)
                link.cursor = self.partition(link.hub, link.pid).start_index(filter_text)
                print(f"receiver on {link.hub}/{link.pid} from {link.cursor} ({filter_text})", file=sys.stderr, flush=True)
                self.receivers.append(link)
        else:
            link.target.address = link.remote_target.address

    def on_sendable(self, event):
        self.feed()

    def reply(self, conn, node, req, props, body=None):
        links = []
        link = conn.link_head(0)
        while link:
            if (link.is_sender and link.source.address == node
                    and link.state & Endpoint.REMOTE_ACTIVE and link.state & Endpoint.LOCAL_ACTIVE):
                links.append(link)
            link = link.next(0)
        if links:
            links[-1].send(Message(correlation_id=req.id, properties=props, body=body))

    def on_message(self, event):
        node, req = event.link.target.address, event.message
        props = req.properties or {}
        if node == "$cbs":
            token = req.body if isinstance(req.body, str) else ""
            if token.startswith("tok-"):
                self.reply(event.connection, node, req, {"status-code": 202, "status-description": "Accepted"})
            else:
                self.reply(event.connection, node, req, {"status-code": 401, "status-description": "InvalidSignature: the token was not issued by the test authority"})
        elif node == "$management":
            hub = props.get("name")
            now = Timestamp(int(time.time() * 1000))
            if props.get("type") == "com.microsoft:eventhub":
                body = {"name": hub, "created_at": Timestamp(0), "partition_count": len(self.partition_ids),
                        "partition_ids": Array(UNDESCRIBED, Data.STRING, *self.partition_ids)}
            else:
                pid = props.get("partition")
                events = self.partition(hub, pid).events
                body = {"name": hub, "partition": pid, "type": "com.microsoft:partition",
                        "begin_sequence_number": 0, "last_enqueued_sequence_number": len(events) - 1,
                        "last_enqueued_sequence_number_epoch": 0,
                        "last_enqueued_offset": str(max(len(events) - 1, 0) * 1024),
                        "last_enqueued_time_utc": now, "is_partition_empty": not events}
            self.reply(event.connection, node, req, {"status-code": 200, "status-description": "OK"}, body)

    def on_link_closing(self, event):
        event.link.close()

    def on_link_remote_detach(self, event):
        # Without answering the detach, the SDK's EventReceiver::close() waits for ever.
        event.link.detach()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:15671")
    p.add_argument("--messages", required=True)
    p.add_argument("--partitions", type=int, default=4)
    a = p.parse_args()
    c = Container(EventHubs(a.listen, a.messages, a.partitions))
    c.allow_insecure_mechs = True
    c.allowed_mechs = "ANONYMOUS"
    c.run()


if __name__ == "__main__":
    main()
