"""The jwt condition: keys, algorithms, claims, where the token is; tokens made with PyJWT."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from hookrun.config import ConfigError, InboundRequest, check_conditions
from hookrun.config.conditions import redact
from hookrun.config.signing import OutgoingRequest, SigningError, SigningOptions, sign_request
from tests.config.one_trigger import with_condition

SECRET = "k" * 64
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def block(text: str, indent: int = 10) -> str:
    return "|\n" + "\n".join(" " * indent + line for line in text.splitlines())


def trigger(condition: str, config_dir=None):
    return with_condition(condition, None if config_dir is None else str(config_dir))


def token(key, algorithm: str, headers=None, **claims) -> str:
    claims.setdefault("exp", int(time.time()) + 300)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def bearer(value: str, **headers: str) -> InboundRequest:
    return InboundRequest("POST", "/", {"Authorization": f"Bearer {value}", **headers})


def check(t, request):
    return check_conditions(t, request, time.time())


HS256 = f"{{type: jwt, secret: {SECRET}, algorithms: [HS256]}}"
RS256_PEM = "type: jwt\n        algorithms: [RS256]\n        public_key: " + block(pem(RSA_KEY))


class TestAccepted:
    def test_an_hs256_token_identifies_its_subject_and_the_other_claims(self):
        verdict = check(trigger(HS256), bearer(token(SECRET, "HS256", sub="alice", team="ml")))
        assert verdict.ok, verdict.reason
        assert verdict.account == "alice"
        assert set(verdict.account_metadata) == {"exp", "team"}
        assert verdict.account_metadata["team"] == "ml"

    @pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
    def test_hs384_and_hs512(self, algorithm):
        t = trigger(f"{{type: jwt, secret: {SECRET}, algorithms: [{algorithm}]}}")
        assert check(t, bearer(token(SECRET, algorithm, sub="a"))).ok

    @pytest.mark.parametrize(
        ("algorithm", "key"), [("RS256", RSA_KEY), ("ES256", EC_KEY), ("EdDSA", ED_KEY)]
    )
    def test_asymmetric_tokens_verify_with_a_pem_public_key(self, algorithm, key):
        t = trigger(
            f"type: jwt\n        algorithms: [{algorithm}]\n        public_key: " + block(pem(key))
        )
        verdict = check(t, bearer(token(key, algorithm, sub="svc")))
        assert verdict.ok, verdict.reason
        assert verdict.account == "svc"

    def test_a_public_key_file_is_read_relative_to_the_config_file(self, tmp_path):
        (tmp_path / "keys").mkdir()
        (tmp_path / "keys" / "idp.pem").write_text(pem(EC_KEY))
        t = trigger("{type: jwt, algorithms: [ES256], public_key_file: keys/idp.pem}", tmp_path)
        assert check(t, bearer(token(EC_KEY, "ES256", sub="x"))).ok

    def test_a_jwks_file_picks_the_key_by_kid(self, tmp_path):
        keys = [
            RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True) | {"kid": "r1", "alg": "RS256"},
            ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True) | {"kid": "e1"},
            OKPAlgorithm.to_jwk(ED_KEY.public_key(), as_dict=True) | {"kid": "o1"},
        ]
        (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
        t = trigger(
            "{type: jwt, algorithms: [RS256, ES256, EdDSA], jwks_file: jwks.json,"
            " issuer: https://idp.example, audience: hookrun}",
            tmp_path,
        )
        claims = {"iss": "https://idp.example", "aud": "hookrun", "sub": "bob"}
        for kid, key, algorithm in (("r1", RSA_KEY, "RS256"), ("e1", EC_KEY, "ES256")):
            verdict = check(t, bearer(token(key, algorithm, {"kid": kid}, **claims)))
            assert verdict.ok, verdict.reason
        # signed by the EC key, but naming the RSA key's kid
        forged = token(EC_KEY, "ES256", {"kid": "r1"}, **claims)
        assert "invalid token" in check(t, bearer(forged)).reason
        unknown = token(RSA_KEY, "RS256", {"kid": "nope"}, **claims)
        assert check(t, bearer(unknown)).reason.endswith("no key with kid 'nope' in the JWKS file")

    def test_the_token_may_be_in_another_header_a_query_parameter_or_a_cookie(self):
        good = token(SECRET, "HS256", sub="c")
        in_header = trigger(f"{{type: jwt, secret: {SECRET}, algorithms: [HS256], header: X-Jwt}}")
        assert check(in_header, InboundRequest("POST", "/", {"X-Jwt": good})).ok
        in_query = trigger(f"{{type: jwt, secret: {SECRET}, algorithms: [HS256], query: jwt}}")
        assert check(in_query, InboundRequest("POST", "/", {}, query={"jwt": good})).ok
        in_cookie = trigger(f"{{type: jwt, secret: {SECRET}, algorithms: [HS256], cookie: sess}}")
        cookie = {"Cookie": f"theme=dark; sess={good}; x=1"}
        assert check(in_cookie, InboundRequest("POST", "/", cookie)).ok
        assert check(in_cookie, InboundRequest("POST", "/", {"Cookie": "x=1"})).reason.endswith(
            "missing cookie sess"
        )

    def test_a_token_in_a_query_parameter_or_custom_header_is_stored_redacted(self):
        good = token(SECRET, "HS256", sub="c")
        in_query = trigger(f"{{type: jwt, secret: {SECRET}, algorithms: [HS256], query: jwt}}")
        _, query = redact(in_query, InboundRequest("POST", "/", {}, query={"jwt": good, "a": "1"}))
        assert query == {"jwt": "[redacted]", "a": "1"}
        in_header = trigger(f"{{type: jwt, secret: {SECRET}, algorithms: [HS256], header: X-Jwt}}")
        headers, _ = redact(in_header, InboundRequest("POST", "/", {"X-Jwt": good}))
        assert headers == {"x-jwt": "[redacted]"}

    def test_leeway_admits_a_token_that_just_expired(self):
        expired = token(SECRET, "HS256", exp=int(time.time()) - 10)
        strict = trigger(HS256)
        assert check(strict, bearer(expired)).reason.endswith("Signature has expired")
        lenient = trigger(f"{{type: jwt, secret: {SECRET}, algorithms: [HS256], leeway_s: 30}}")
        assert check(lenient, bearer(expired)).ok


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(signature)}" if signature else f"{signing_input}."


class TestRefused:
    def test_a_token_without_exp_is_refused(self):
        t = trigger(HS256)
        no_exp = jwt.encode({"sub": "a"}, SECRET, algorithm="HS256")
        assert check(t, bearer(no_exp)).reason.endswith('Token is missing the "exp" claim')

    def test_issuer_and_audience_are_checked_when_configured(self):
        t = trigger(
            f"{{type: jwt, secret: {SECRET}, algorithms: [HS256], issuer: idp, audience: [a, b]}}"
        )
        assert check(t, bearer(token(SECRET, "HS256", iss="idp", aud="b"))).ok
        assert not check(t, bearer(token(SECRET, "HS256", iss="other", aud="b"))).ok
        assert not check(t, bearer(token(SECRET, "HS256", iss="idp", aud="c"))).ok
        assert not check(t, bearer(token(SECRET, "HS256", iss="idp"))).ok
        # without `audience` configured, a token's aud is not checked
        assert check(trigger(HS256), bearer(token(SECRET, "HS256", aud="anything"))).ok

    def test_a_wrong_secret_or_a_tampered_token_is_refused(self):
        t = trigger(HS256)
        assert not check(t, bearer(token("x" * 64, "HS256"))).ok
        good = token(SECRET, "HS256", sub="alice")
        head, _, rest = good.partition(".")
        claims = b64url(json.dumps({"sub": "root", "exp": int(time.time()) + 300}).encode())
        tampered = f"{head}.{claims}.{rest.partition('.')[2]}"
        assert "Signature verification failed" in check(t, bearer(tampered)).reason

    def test_alg_none_is_never_accepted(self):
        claims = {"sub": "eve", "exp": int(time.time()) + 300}
        none = unsigned({"alg": "none", "typ": "JWT"}, claims)
        for condition in (HS256, RS256_PEM):
            verdict = check(trigger(condition), bearer(none))
            assert not verdict.ok
            assert verdict.reason.endswith("The specified alg value is not allowed")

    def test_an_hs256_token_signed_with_the_rsa_public_key_is_refused(self):
        # The classic algorithm confusion: a verifier that took the token's alg would use the
        # (public) PEM as an HMAC secret.
        claims = {"sub": "eve", "exp": int(time.time()) + 300}
        header = {"alg": "HS256", "typ": "JWT"}
        signing_input = unsigned(header, claims)[:-1].encode()
        public_pem = pem(RSA_KEY).encode()
        forged = unsigned(
            header, claims, hmac.new(public_pem, signing_input, hashlib.sha256).digest()
        )
        verdict = check(trigger(RS256_PEM), bearer(forged))
        assert not verdict.ok
        assert verdict.reason.endswith("The specified alg value is not allowed")

    def test_an_algorithm_not_listed_is_refused(self):
        t = trigger(f"{{type: jwt, secret: {SECRET}, algorithms: [HS512]}}")
        assert not check(t, bearer(token(SECRET, "HS256"))).ok

    @pytest.mark.parametrize(
        ("request_", "reason"),
        [
            (InboundRequest("POST", "/", {}), "missing header Authorization"),
            (InboundRequest("POST", "/", {"Authorization": "Basic YTpi"}), "not a Bearer token"),
            (bearer("not.a.jwt"), "invalid token: "),
        ],
    )
    def test_a_missing_or_malformed_token_is_refused(self, request_, reason):
        verdict = check(trigger(HS256), request_)
        assert not verdict.ok and reason in verdict.reason


class TestConfigErrors:
    @pytest.mark.parametrize(
        ("condition", "error"),
        [
            (
                f"{{type: jwt, secret: {SECRET}, algorithms: [HS256, RS256]}}",
                "algorithms: a 'secret' verifies HS256, HS384 and HS512 only",
            ),
            (
                "type: jwt\n        algorithms: [RS256, HS256]\n        public_key: "
                + block(pem(RSA_KEY)),
                "algorithms: HS256 needs a 'secret', not a public key",
            ),
            ("{type: jwt, algorithms: [HS256]}", "give exactly one of 'secret', 'public_key'"),
            (f"{{type: jwt, secret: {SECRET}, algorithms: []}}", "algorithms: must not be empty"),
            (f"{{type: jwt, secret: {SECRET}, algorithms: [none]}}", "algorithms[0]: input"),
            (f"{{type: jwt, secret: {SECRET}, algorithms: [PS256]}}", "algorithms[0]: input"),
            ("{type: jwt, secret: short, algorithms: [HS256]}", "secret: too weak for HS256"),
            ("{type: jwt, algorithms: [RS256], public_key: nope}", "public_key: not a PEM"),
            (
                "type: jwt\n        algorithms: [ES256]\n        public_key: "
                + block(pem(RSA_KEY)),
                "public_key: the key cannot verify ES256",
            ),
            (
                "{type: jwt, algorithms: [RS256], jwks_file: missing.json}",
                "jwks_file: cannot read",
            ),
            (
                f"{{type: jwt, secret: {SECRET}, algorithms: [HS256], query: t, cookie: c}}",
                "give at most one of 'header', 'query' or 'cookie'",
            ),
        ],
    )
    def test_a_bad_jwt_condition_is_a_config_error(self, condition, error, tmp_path):
        with pytest.raises(ConfigError) as exc:
            trigger(condition, tmp_path)
        assert "hookrun.yaml: triggers[0].conditions[0]" in str(exc.value)
        assert error in str(exc.value)
        assert SECRET not in str(exc.value)

    def test_a_jwks_file_without_a_key_for_the_algorithms_is_a_config_error(self, tmp_path):
        jwk = RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
        (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
        with pytest.raises(ConfigError, match="jwks_file: no key for ES256"):
            trigger("{type: jwt, algorithms: [ES256], jwks_file: jwks.json}", tmp_path)
        (tmp_path / "bad.json").write_text("{}")
        with pytest.raises(ConfigError, match="jwks_file: not a usable JSON Web Key Set"):
            trigger("{type: jwt, algorithms: [RS256], jwks_file: bad.json}", tmp_path)


def private_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class TestSigning:
    """``hookrun send``'s side: tokens minted for a jwt condition verify against it."""

    def sign(self, t, **options):
        out = sign_request(t, OutgoingRequest(body=b"{}"), SigningOptions(**options))
        return InboundRequest("POST", "/", out.headers, query=out.query, body=out.body)

    def test_an_asymmetric_condition_is_signed_with_the_private_key_given(self):
        t = trigger(RS256_PEM)
        now = time.time()
        request = self.sign(t, now=now, private_key=private_pem(RSA_KEY))
        verdict = check_conditions(t, request, now + 5)
        assert verdict.ok, verdict.reason
        assert verdict.account == "hookrun-send"
        # the token expires: five minutes later it is refused
        assert not check_conditions(t, request, now + 301).ok

    def test_with_a_jwks_file_the_token_names_the_kid_of_the_matching_key(self, tmp_path):
        keys = [
            RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True) | {"kid": "r1"},
            OKPAlgorithm.to_jwk(ED_KEY.public_key(), as_dict=True) | {"kid": "o1"},
        ]
        (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
        t = trigger("{type: jwt, algorithms: [RS256, EdDSA], jwks_file: jwks.json}", tmp_path)
        now = time.time()
        request = self.sign(t, now=now, private_key=private_pem(ED_KEY))
        assert jwt.get_unverified_header(request.headers["authorization"][7:])["kid"] == "o1"
        assert check_conditions(t, request, now).ok
        with pytest.raises(SigningError, match="matches no key of the JWKS file"):
            self.sign(t, now=now, private_key=private_pem(EC_KEY))

    def test_without_the_private_key_signing_says_what_it_needs(self):
        with pytest.raises(SigningError, match=r"conditions\[0\] \(jwt\): signing RS256 needs"):
            self.sign(trigger(RS256_PEM), now=time.time())

    def test_a_token_not_yet_valid_is_refused(self):
        t = trigger(HS256)
        now = time.time()
        early = token(SECRET, "HS256", nbf=int(now) + 60, exp=int(now) + 120)
        assert check_conditions(t, bearer(early), now).reason.endswith("not yet valid (nbf)")
        assert check_conditions(t, bearer(early), now + 61).ok
