"""Store URLs: one server, Sentinel and Cluster, parsed into redis-py's own clients."""

from __future__ import annotations

import msgspec
import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from proxy import state
from proxy.config import Config, ConfigError
from proxy.state.clients import connect, parse


def test_a_sentinel_url_names_its_sentinels_master_and_database():
    target = parse("rediss+sentinel://app:s3cret@10.0.0.1:26379,sentinel-b,[::1]:26380/mymaster/3?prefix=gw:")
    assert target.kind == "sentinel" and target.service == "mymaster" and target.prefix == "gw:"
    assert target.hosts == (("10.0.0.1", 26379), ("sentinel-b", 26379), ("::1", 26380))
    assert target.options == {"username": "app", "password": "s3cret", "db": 3, "ssl": True}


def test_a_cluster_url_names_its_startup_nodes():
    target = parse("redis+cluster://10.0.0.1:7000,10.0.0.2")
    assert target.kind == "cluster" and target.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 6379))
    assert "db" not in target.options and "ssl" not in target.options
    assert parse("rediss+cluster://h:7000").options == {"ssl": True}


def test_a_single_server_keeps_redis_py_query_options():
    target = parse("rediss://:pw@h:6380/2?ssl_cert_reqs=none")
    assert target.hosts == (("h", 6380),) and target.options == {"password": "pw", "db": 2, "ssl": True,
                                                                  "ssl_cert_reqs": "none"}


@pytest.mark.parametrize("url, why", [
    ("redis+sentinel://h:26379", "names its master"),
    ("redis+cluster://h:7000/2", "only database 0"),
    ("redis://h/0?prefix={x}:", "must not contain"),
    ("redis+sentinel://:1/m", "host is missing"),
])
def test_unusable_urls_say_why(url, why):
    with pytest.raises(ValueError, match=why):
        parse(url)


def test_open_store_turns_a_bad_url_into_a_config_error():
    cfg = msgspec.convert({"storeUrl": "redis+cluster://h/5", "secretKey": "k"}, type=Config)
    with pytest.raises(ConfigError, match="STORE_URL: a Redis Cluster has only database 0"):
        state.open_store(cfg)


async def test_each_family_gets_redis_pys_own_client_without_retries():
    sentinel = connect(parse("redis+sentinel://a:1,b:2/mymaster/0?sentinel_password="))
    assert isinstance(sentinel.connection_pool, SentinelConnectionPool)
    assert sentinel.connection_pool.service_name == "mymaster"
    assert [s.connection_pool.connection_kwargs.get("password") for s in
            sentinel.connection_pool.sentinel_manager.sentinels] == [None, None]
    assert sentinel.connection_pool.connection_kwargs["retry"].get_retries() == 0
    cluster = connect(parse("redis+cluster://a:7000"))
    assert isinstance(cluster, RedisCluster) and cluster.retry.get_retries() == 0
    await sentinel.aclose()
    await cluster.aclose()
