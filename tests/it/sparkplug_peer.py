"""An independent Sparkplug B peer for forewarn's tests, built on PyPI's pysparkplug.

`encode`: prints the messages of one edge node's life as JSON lines
`{"step", "topic", "payload_hex"}`, every payload encoded by pysparkplug (aliases, sequence
numbers, a gap, a rebirth, deaths). The test publishes them in order.
`decode HEX`: prints the metrics of a payload forewarn sent (its NCMD) as JSON.
"""

import json
import sys
import time

import pysparkplug as sp

GROUP = "plant1"
EDGE = "gw1"
DEVICE = "pump7"


def metric(name, datatype, value, alias=None, timestamp=None):
    return sp.Metric(
        timestamp=timestamp, name=name, datatype=datatype, value=value, alias=alias
    )


def by_alias(alias, datatype, value, timestamp):
    # Data by alias only, no name and no datatype: only the birth says what it is.
    return sp.Metric(timestamp=timestamp, name=None, datatype=datatype, value=value, alias=alias)


def node_birth(now, bd_seq):
    return sp.NBirth(
        timestamp=now,
        seq=0,
        metrics=(
            metric("bdSeq", sp.DataType.INT64, bd_seq, timestamp=now),
            metric("Node Control/Rebirth", sp.DataType.BOOLEAN, False, timestamp=now),
            metric("Supply Voltage", sp.DataType.FLOAT, 24.5, alias=1, timestamp=now),
            metric("Firmware", sp.DataType.STRING, "1.2.3", alias=2, timestamp=now),
            metric("Cabinet Temp", sp.DataType.INT16, -5, alias=3, timestamp=now),
        ),
    )


def device_birth(now, seq):
    return sp.DBirth(
        timestamp=now,
        seq=seq,
        metrics=(
            metric("Motor/Current", sp.DataType.DOUBLE, 3.25, alias=10, timestamp=now),
            metric("Motor/Running", sp.DataType.BOOLEAN, True, alias=11, timestamp=now),
            metric("Flow Rate", sp.DataType.UINT32, 120, alias=12, timestamp=now),
        ),
    )


def encode():
    now = int(time.time() * 1000) - 60_000
    node = f"spBv1.0/{GROUP}/{{}}/{EDGE}"
    device = f"spBv1.0/{GROUP}/{{}}/{EDGE}/{DEVICE}"
    steps = [
        ("birth", node.format("NBIRTH"), node_birth(now, 0)),
        ("birth", device.format("DBIRTH"), device_birth(now, 1)),
        (
            "data",
            device.format("DDATA"),
            sp.DData(
                timestamp=now + 1000,
                seq=2,
                metrics=(
                    by_alias(10, sp.DataType.DOUBLE, 3.5, now + 1000),
                    by_alias(12, sp.DataType.UINT32, 118, now + 1000),
                ),
            ),
        ),
        (
            "data",
            node.format("NDATA"),
            sp.NData(
                timestamp=now + 2000,
                seq=3,
                metrics=(
                    by_alias(1, sp.DataType.FLOAT, 23.75, now + 2000),
                    by_alias(3, sp.DataType.INT16, -7, now + 2000),
                ),
            ),
        ),
        # seq 4..6 never arrive: the host must ask for a rebirth, and keep this reading.
        (
            "gap",
            device.format("DDATA"),
            sp.DData(
                timestamp=now + 3000,
                seq=7,
                metrics=(by_alias(10, sp.DataType.DOUBLE, 3.75, now + 3000),),
            ),
        ),
        # The edge node answers the rebirth request: births again, same bdSeq.
        ("rebirth", node.format("NBIRTH"), node_birth(now + 4000, 0)),
        ("rebirth", device.format("DBIRTH"), device_birth(now + 4000, 1)),
        (
            "rebirth",
            device.format("DDATA"),
            sp.DData(
                timestamp=now + 5000,
                seq=2,
                metrics=(by_alias(10, sp.DataType.DOUBLE, 4.0, now + 5000),),
            ),
        ),
        # Another edge node sends data it never announced: dead letter, rebirth request.
        (
            "unborn",
            f"spBv1.0/{GROUP}/DDATA/gw2/{DEVICE}",
            sp.DData(
                timestamp=now + 5000,
                seq=9,
                metrics=(by_alias(10, sp.DataType.DOUBLE, 9.0, now + 5000),),
            ),
        ),
        ("device_death", device.format("DDEATH"), sp.DDeath(timestamp=now + 6000, seq=3)),
        # A stale NDEATH (an older connection's will) is ignored; the current one is not.
        (
            "stale_death",
            node.format("NDEATH"),
            sp.NDeath(timestamp=None, bd_seq_metric=metric("bdSeq", sp.DataType.INT64, 7)),
        ),
        (
            "node_death",
            node.format("NDEATH"),
            sp.NDeath(timestamp=None, bd_seq_metric=metric("bdSeq", sp.DataType.INT64, 0)),
        ),
    ]
    for step, topic, payload in steps:
        print(json.dumps({"step": step, "topic": topic, "payload_hex": payload.encode().hex()}))


def decode(payload_hex):
    command = sp.NCmd.decode(bytes.fromhex(payload_hex))
    print(
        json.dumps(
            {
                "timestamp": command.timestamp,
                "metrics": [
                    {"name": m.name, "datatype": m.datatype.name, "value": m.value}
                    for m in command.metrics
                ],
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "encode":
        encode()
    else:
        decode(sys.argv[2])
