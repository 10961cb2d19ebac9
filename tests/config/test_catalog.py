import msgspec
import pytest

from proxy import providers
from proxy.config import ConfigError, decode, load
from proxy.config.catalog import CatalogConfig, hosted_bundle, provider_types, reasoning_model


def test_the_provider_types_a_catalog_entry_may_name_are_the_adapters_table():
    # the config is checked without importing the adapters: the bundled list must not drift
    assert provider_types() == {name.lower() for name in providers.TABLE}


def test_a_hosted_model_naming_bundled_hardware_is_accepted_and_an_unknown_one_names_the_field():
    spec = {"model": "m", "provider": "vllm", "parameters": 1, "quantization": "F16",
            "createTime": "2024-07-23T00:00:00Z", "hardware": [next(iter(hosted_bundle().hardware))]}
    assert msgspec.convert({"hostedModels": [spec]}, CatalogConfig).hosted_models[0].model == "m"
    with pytest.raises(ConfigError, match=r"hostedModels\[0\]\.hardware"):
        decode(msgspec.json.encode({"catalog": {"hostedModels": [{**spec, "hardware": ["nope"]}]}}), suffix=".json")


def test_the_embedded_defaults_are_the_demo_provider_from_the_package_data():
    cfg = load(env={})
    assert cfg.demo and [(p.name, p.models) for p in cfg.providers] == [("mock", ("mock-gpt",))]


def test_reasoning_models_come_from_the_bundled_metadata():
    assert not reasoning_model("no-such-model")
