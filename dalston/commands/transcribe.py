"""`dalston transcribe FILE [--model fast] [--format srt]`: the same engine as the server, in process.

No server, no keys: resolve the model (id or alias), check its pinned weights, load the family,
decode the file with the shared audio path and print the transcript in any response format.

`--job URL` sends the file to a gateway as a batch job instead (docs/JOBS.md): it is exactly
`dalston jobs --url URL submit FILE ...` (the same parser and client are called, not copied), with
the progress bar on stderr and the result written as here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from collections.abc import Callable

from dalston.formats import RESPONSE_FORMATS, WORD_TIMED_FORMATS
from dalston.segmenting import CueLimits


def _bounded(kind: Callable[[str], float], low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{raw}' is not a {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{raw} is not between {low:g} and {high:g}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="audio or video file (wav, mp3, flac, ogg/opus, m4a, webm, …)")
    parser.add_argument("--model", default="fast", help="variant id or alias (default: fast)")
    parser.add_argument("--format", dest="response_format", choices=RESPONSE_FORMATS, default="text")
    parser.add_argument("--language", default=None, help="ISO 639-1 code; default: detect")
    parser.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    parser.add_argument("--prompt", default=None, help="initial prompt (spelling of names, style)")
    parser.add_argument("--word-timestamps", action="store_true", help="words in verbose_json")
    parser.add_argument("--hotwords", default=None, help="vocabulary to bias decoding towards (names, terms)")
    parser.add_argument("--vad", dest="vad_filter", action=argparse.BooleanOptionalAction, default=None,
                        help="decode only detected speech (default: the variant's runtime.vad_filter)")
    limits = CueLimits()
    parser.add_argument("--max-line-width", type=_bounded(int, 10, 200), default=limits.max_line_width,
                        help=f"srt/vtt: characters per line (default {limits.max_line_width})")
    parser.add_argument("--max-line-count", type=_bounded(int, 1, 10), default=limits.max_line_count,
                        help=f"srt/vtt: lines per cue (default {limits.max_line_count})")
    parser.add_argument("--max-cue-seconds", type=_bounded(float, 1.0, 60.0), default=limits.max_cue_seconds,
                        help=f"srt/vtt: seconds per cue (default {limits.max_cue_seconds:g})")
    parser.add_argument("--engines-dir", type=Path, default=None)
    parser.add_argument("--model-dir", default=None, help="root of weights dirs (default $DALSTON_MODEL_DIR)")
    parser.add_argument("--output", "-o", type=Path, default=None, help="write here instead of stdout")
    parser.add_argument("--job", metavar="URL", default=None,
                        help="submit to the gateway at URL as a batch job and follow it (`dalston jobs submit`)")
    parser.add_argument("--api-key", default=None, help="with --job: dk_... key (default $DALSTON_API_KEY)")


def _fail(message: str, code: int = 1) -> int:
    print(f"dalston transcribe: {message}", file=sys.stderr)
    return code


def _as_job(args: argparse.Namespace) -> int:
    """`--job URL`: hand the file and the options a job takes to `dalston jobs submit`."""
    from dalston.commands import jobs

    limits = CueLimits()
    local_only = [flag for flag, used in (
        ("--hotwords", args.hotwords is not None), ("--vad/--no-vad", args.vad_filter is not None),
        ("--engines-dir", args.engines_dir is not None), ("--model-dir", args.model_dir is not None),
        ("--max-line-width", args.max_line_width != limits.max_line_width),
        ("--max-line-count", args.max_line_count != limits.max_line_count),
        ("--max-cue-seconds", args.max_cue_seconds != limits.max_cue_seconds)) if used]
    if local_only:
        return _fail(f"{', '.join(local_only)} apply to in-process transcription only, not to a job "
                     f"(a job takes the fields of POST /v1/jobs: docs/JOBS.md)", 2)
    argv = ["--url", args.job, *(["--api-key", args.api_key] if args.api_key else []),
            "submit", str(args.file), "--model", args.model, "--format", args.response_format, "--task", args.task]
    for flag, value in (("--language", args.language), ("--prompt", args.prompt), ("--output", args.output)):
        if value is not None:
            argv += [flag, str(value)]
    if args.word_timestamps:
        argv.append("--word-timestamps")
    parser = argparse.ArgumentParser(prog="dalston transcribe --job")
    jobs.add_arguments(parser)
    return jobs.run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if args.job is not None:
        return _as_job(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    from dalston.audio import AudioError, decode_audio
    from dalston.catalog import Catalog, SpecInvalid
    from dalston.engine_sdk import EngineLoadError, TranscribeOptions, UnsupportedOption, create_engine
    from dalston.formats import render
    from dalston.catalog import ModelNotFound, ModelRegistry
    from dalston.weights import WeightsError, check_weights, weights_dir

    try:
        catalog = Catalog.load(args.engines_dir)
        entry = catalog.get(ModelRegistry.from_catalog(catalog).resolve(args.model))
    except SpecInvalid as exc:
        return _fail(f"invalid variant files:\n{exc}")
    except ModelNotFound as exc:
        return _fail(str(exc), 2)
    spec = entry.spec
    if spec.stage not in ("transcribe", "realtime"):
        return _fail(f"{spec.id} is a {spec.stage} engine, not a transcriber", 2)
    if args.task == "translate" and not spec.capabilities.translation:
        return _fail(f"{spec.id} cannot translate (capabilities.translation is false)", 2)

    try:
        audio = decode_audio(args.file, max_seconds=float(spec.capabilities.max_audio_duration))
    except AudioError as exc:
        return _fail(f"{args.file}: {exc.message}")
    directory = weights_dir(spec, args.model_dir)
    try:
        check_weights(spec, directory)
        engine = create_engine(entry)
        engine.load(directory)
    except (WeightsError, EngineLoadError) as exc:
        return _fail(str(exc))
    options = TranscribeOptions(language=args.language, task=args.task, prompt=args.prompt,
                                word_timestamps=args.word_timestamps or args.response_format in WORD_TIMED_FORMATS,
                                hotwords=args.hotwords, vad_filter=args.vad_filter)
    try:
        transcript = engine.transcribe(audio.samples, options)
    except UnsupportedOption as exc:
        return _fail(exc.message, 2)
    granularities = ("segment", "word") if args.word_timestamps else ("segment",)
    limits = CueLimits(max_line_width=int(args.max_line_width), max_line_count=int(args.max_line_count),
                       max_cue_seconds=float(args.max_cue_seconds))
    body, _ = render(transcript, args.response_format, task=args.task, granularities=granularities, cue_limits=limits)
    if args.output:
        args.output.write_text(body if body.endswith("\n") else body + "\n", encoding="utf-8")
    else:
        sys.stdout.write(body if body.endswith("\n") else body + "\n")
    return 0
