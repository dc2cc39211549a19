from isthmus.core.viz.top import Top


def _req(stream, path="/api/list?x=1", src_port=5000):
    return {"source": {"ip": "127.1.0.5", "port": src_port, "metadata": {"pod": "vote-bot-1"}},
            "destination": {"ip": "127.1.0.9", "port": 80, "metadata": {"service": "web-svc"}},
            "proxyDirection": "OUTBOUND",
            "requestInitEvent": {"id": {"base": 0, "stream": stream}, "method": "GET",
                                 "path": path}}


def _rsp(stream, ms, status=200, src_port=5000):
    return {"source": {"ip": "127.1.0.5", "port": src_port}, "proxyDirection": "OUTBOUND",
            "responseInitEvent": {"id": {"base": 0, "stream": stream}, "httpStatus": status,
                                  "sinceRequestInit": {"seconds": 0, "nanos": int(ms * 1e6)}}}


def test_top_counts_paths_with_best_worst_last_and_success():
    top = Top()
    for stream, ms, status in ((1, 5, 200), (2, 2, 200), (3, 9, 500)):
        top.add(_req(stream))
        top.add(_rsp(stream, ms, status))
    top.add(_rsp(99, 1))  # a response whose request was not seen: not counted
    (row,) = top.rows()
    assert row.to_dict() == {"source": "pod/vote-bot-1", "destination": "service/web-svc",
                             "method": "GET", "path": "/api/list", "count": 3, "best_ms": 2.0,
                             "worst_ms": 9.0, "last_ms": 9.0, "success": 2 / 3}


def test_top_is_bounded_and_orders_busiest_first():
    top = Top(max_rows=2)
    for i, path in enumerate(["/a", "/b", "/b", "/c", "/c", "/c"]):
        top.add(_req(i, path))
        top.add(_rsp(i, 1))
    assert [(r.path, r.count) for r in top.rows()] == [("/c", 3), ("/b", 2)]
