# tests/resp_client.py: Debian's python3-redis (redis-py) against a peerkv
# RESP port: the commands a Python app uses, a pipeline, scan_iter, and
# the errors it raises. Usage: python3 resp_client.py PORT. Prints "ok"
# and exits 0, or raises.
import sys

import redis

port = int(sys.argv[1])
r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
assert r.ping() is True
assert r.set("py:a", "1") is True
assert r.get("py:a") == "1"
assert r.set("py:a", "2", nx=True) is None
assert r.set("py:a", "3", xx=True) is True
assert r.set("py:a", "4", get=True) == "3"
assert r.mset({"py:b": "x", "py:c": "y"}) is True
assert r.mget(["py:a", "py:b", "py:nope", "py:c"]) == ["4", "x", None, "y"]
assert r.exists("py:a", "py:b", "py:nope") == 2
assert r.type("py:a") == "string"
assert sorted(r.keys("py:*")) == ["py:a", "py:b", "py:c"]
assert sorted(r.scan_iter(match="py:*", count=1)) == ["py:a", "py:b", "py:c"]
assert r.delete("py:b", "py:nope") == 1
assert r.client_setname("py-test") is True
assert r.client_getname() == "py-test"
assert "redis_version" in r.info("server")
assert r.dbsize() >= 2
try:
    r.set("py:a", "v", ex=10)
    raise AssertionError("SET EX accepted")
except redis.ResponseError as e:
    assert "EX" in str(e) and "not supported" in str(e), e
try:
    r.execute_command("NOSUCHCMD", "x")
    raise AssertionError("unknown command accepted")
except redis.ResponseError as e:
    assert str(e).startswith("unknown command 'NOSUCHCMD'"), e
# A pipeline of 1000 commands, sent at once, answered in order.
p = r.pipeline(transaction=False)
for i in range(500):
    p.set("pipe:%d" % i, str(i))
    p.get("pipe:%d" % i)
out = p.execute()
assert out == [x for i in range(500) for x in (True, str(i))], out[:6]
# Another keyspace through SELECT (redis-py's db=N).
r2 = redis.Redis(host="127.0.0.1", port=port, db=2, decode_responses=True)
assert r2.get("py:a") is None
assert r2.set("py:a", "db2") is True
assert r.get("py:a") == "4"
print("ok")
