"""TLS and mutual TLS on the shared runtime (a real subprocess server with a FAKE engine),
with certificates made at test time: only a client holding a certificate from the deployment's
CA is served; a plaintext client, one without a certificate and one whose certificate another CA
signed are refused (UNAVAILABLE) and the server logs each refused handshake; health answers over
mTLS and on the plaintext health-only port that probes use."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_runtime.channels import sync_channel
from service_runtime.launcher import ServiceProcess
from service_runtime.probe import main as probe
from service_runtime.tls import ClientTls
from tests.certs import Pki, make_pki
from voice.tts.v1 import tts_pb2, tts_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
_HEALTH_PORT = re.compile(r"health \(grpc\.health\.v1 only, plaintext\) on \S+:(\d+)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _start(*args: str) -> ServiceProcess:
    return ServiceProcess(
        "fake", args=["--grace-s", "1", "--on-load", "serve", *args], module="tests.fake_runtime_service"
    ).wait_listening()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[ServiceProcess]:
    proc = _start(
        "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
        "--tls-client-ca", str(pki.ca), "--health-port", "0",
    )  # fmt: skip
    proc.wait_serving(30, tls=ClientTls(ca=str(pki.ca), cert=str(pki.client.cert), key=str(pki.client.key)))
    yield proc
    proc.terminate()


def _voices(channel: grpc.Channel) -> list[str]:
    reply = tts_pb2_grpc.TextToSpeechStub(channel).ListVoices(tts_pb2.ListVoicesRequest(), timeout=10)
    return [v.name for v in reply.voices]


def _refused(channel: grpc.Channel) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        _voices(channel)
    return refused.value


def test_the_deployment_client_is_served_over_mtls_and_its_health_check_answers(
    pki: Pki, mtls_server: ServiceProcess
) -> None:
    tls = ClientTls(ca=str(pki.ca), cert=str(pki.client.cert), key=str(pki.client.key))
    with grpc.secure_channel(mtls_server.address, tls.credentials()) as channel:
        assert _voices(channel) == ["fake-voice"]
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == SERVING
    assert "listening on 127.0.0.1" in mtls_server.log and "client certificate required" in mtls_server.log


@pytest.mark.parametrize("client", ["plaintext", "no-certificate", "other-ca-certificate"])
def test_clients_without_a_certificate_from_the_deployment_ca_are_refused_and_logged(
    pki: Pki, mtls_server: ServiceProcess, client: str
) -> None:
    before = mtls_server.log.count("Handshake failed")
    if client == "plaintext":
        channel = grpc.insecure_channel(mtls_server.address)
    elif client == "no-certificate":
        channel = grpc.secure_channel(mtls_server.address, ClientTls(ca=str(pki.ca)).credentials())
    else:
        intruder = ClientTls(ca=str(pki.ca), cert=str(pki.foreign_client.cert), key=str(pki.foreign_client.key))
        channel = grpc.secure_channel(mtls_server.address, intruder.credentials())
    with channel:
        error = _refused(channel)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # The server side wrote the refused handshake to its log (grpc's own TLS layer).
    mtls_server.wait_for_log(lambda log: log.count("Handshake failed") > before, timeout_s=10)


def test_a_client_that_does_not_trust_the_deployment_ca_refuses_the_server(
    pki: Pki, mtls_server: ServiceProcess
) -> None:
    wrong_trust = ClientTls(ca=str(pki.foreign_ca), cert=str(pki.client.cert), key=str(pki.client.key))
    with grpc.secure_channel(mtls_server.address, wrong_trust.credentials()) as channel:
        assert _refused(channel).code() == grpc.StatusCode.UNAVAILABLE


def test_the_plaintext_health_port_answers_probes_and_serves_nothing_else(mtls_server: ServiceProcess) -> None:
    match = _HEALTH_PORT.search(mtls_server.log)
    assert match, mtls_server.log
    with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == SERVING
        error = _refused(channel)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED  # no model service behind the probe port


def test_tls_with_a_server_certificate_only_serves_any_client_that_trusts_the_ca(pki: Pki) -> None:
    proc = _start("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    try:
        tls = ClientTls(ca=str(pki.ca))
        proc.wait_serving(30, tls=tls)
        with grpc.secure_channel(f"localhost:{proc.port}", tls.credentials()) as channel:
            assert _voices(channel) == ["fake-voice"]
        with grpc.insecure_channel(proc.address) as channel:
            assert _refused(channel).code() == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.terminate()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--tls-cert", "{server_cert}"), "TLS needs both --tls-cert and --tls-key"),
        (("--tls-cert", "{missing}", "--tls-key", "{server_key}"), "--tls-cert {missing}: No such file"),
        (("--tls-cert", "{server_cert}", "--tls-key", "{server_key}", "--tls-client-ca", "{missing}"),
         "--tls-client-ca {missing}: No such file"),
    ],
    ids=["key-missing", "cert-file-missing", "client-ca-file-missing"],
)  # fmt: skip
def test_a_bad_tls_flag_stops_the_server_with_exit_2_and_says_which(
    pki: Pki, tmp_path: Path, flags: tuple[str, ...], says: str
) -> None:
    values = {"server_cert": pki.server.cert, "server_key": pki.server.key, "missing": tmp_path / "nope.pem"}
    proc = ServiceProcess(
        "fake", args=["--on-load", "serve", *(f.format(**values) for f in flags)], module="tests.fake_runtime_service"
    )
    assert proc.process.wait(30) == 2
    proc.wait_for_log(lambda log: says.format(**values) in log, timeout_s=10)


def test_a_replica_list_target_is_served_over_mtls(pki: Pki, mtls_server: ServiceProcess) -> None:
    # A list has no single host name: the certificate is checked against the first address's host.
    tls = ClientTls(ca=str(pki.ca), cert=str(pki.client.cert), key=str(pki.client.key))
    target = f"ipv4:{mtls_server.address},127.0.0.1:{mtls_server.port}"
    with sync_channel(target, tls) as channel:
        assert _voices(channel) == ["fake-voice"]


def test_the_container_probe_reports_serving_on_the_health_port_and_fails_without_a_certificate(
    mtls_server: ServiceProcess,
) -> None:
    match = _HEALTH_PORT.search(mtls_server.log)
    assert match
    assert probe(["--plaintext", f"127.0.0.1:{match.group(1)}"]) == 0
    assert probe(["--plaintext", mtls_server.address]) == 1  # the TLS port refuses a plaintext probe
