"""Where the checked files are, and what each appliance is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "models" / "digits" / "digits.tflite"
MODEL_SUFFIXES = (".tflite", ".onnx", ".pb", ".h5", ".keras", ".pt", ".pth", ".safetensors", ".ckpt",
                  ".mlmodel", ".gguf", ".pkl", ".joblib")

# Names a platform may set (env.untrusted): they change where to listen or
# which key service to ask, never what the enclave protects.
HARMLESS_UNTRUSTED = {
    "action": {"SESEMI_PORT", "SESEMI_HOST", "SESEMI_KS_URL"},
    "keyservice": {"SESEMI_PORT", "SESEMI_HOST"},
}
# Must be in env.default (measured) and never untrusted. For the action these are
# also exactly the names app/config.py refuses from /init on a hardware TEE
# (policy.check_code_trusted_settings), since /init is the platform's other channel.
SECURITY_RELEVANT = {
    "action": ("SESEMI_TEE", "SESEMI_KEY_TTL", "SESEMI_INSECURE_SIM_DEBUG", "SESEMI_PACK", "SESEMI_KS_KEY"),
    "keyservice": ("SESEMI_TEE", "SESEMI_INSECURE_SIM_ATTESTATION", "SESEMI_INSECURE_ALLOW_CLASSICAL_KEM",
                   "SESEMI_KS_TOKEN_TTL", "SESEMI_KS_DB", "SESEMI_BUILD_DATE"),
}
PRODUCTION_VALUES = {
    "action": {"SESEMI_TEE": "occlum", "SESEMI_INSECURE_SIM_DEBUG": "0"},
    "keyservice": {"SESEMI_TEE": "occlum", "SESEMI_INSECURE_SIM_ATTESTATION": "0",
                   "SESEMI_INSECURE_ALLOW_CLASSICAL_KEM": "0"},
}
INFORMATIONAL_ENV = {"SESEMI_VERSION"}


@dataclass(frozen=True)
class Appliance:
    name: str
    package: str          # `python3 -m <package>`
    port: int
    sources: tuple[str, ...]  # files whose string literals name the env settings the code reads

    @property
    def top_bom(self) -> str:
        return f"{self.name}.yaml"

    @property
    def dockerfile(self) -> str:
        return f"{self.name}.Dockerfile"

    @property
    def sim_stage(self) -> str:
        return f"{self.name}-sim"


APPLIANCES = {
    "action": Appliance("action", "app", 8080, ("app/config.py", "app/__main__.py")),
    "keyservice": Appliance("keyservice", "keyservice", 8443, ("keyservice/__main__.py", "keyservice/config.py")),
}
CONFIG_KINDS = ("prod", "dev")


@dataclass
class Layout:
    """Where the checked files are: a repository root (or a copy of its parts)."""

    root: Path = REPO

    @property
    def occ(self) -> Path:
        return self.root / "occlum_instance"

    @property
    def images(self) -> Path:
        return self.root / "images"

    def template(self, appliance: str, kind: str) -> Path:
        return self.occ / "templates" / f"{appliance}.{kind}.json"

    def bom(self, appliance: str) -> Path:
        return self.occ / APPLIANCES[appliance].top_bom

    def dockerfile(self, appliance: str) -> Path:
        return self.images / APPLIANCES[appliance].dockerfile

    def rel(self, p: Path) -> str:
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)
