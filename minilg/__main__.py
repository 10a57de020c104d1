"""Command line: ``python -m minilg {info,train,eval,compare} ...``."""

from __future__ import annotations

import sys

COMMANDS = {
    "list": "names of the registered models (optionally filtered: list '*mini*')",
    "info": "params and MACs of every registered model beside the papers' figures",
    "train": "train one model on an ImageNet subset or the embedded default",
    "eval": "evaluate a checkpoint",
    "compare": "train several models under one budget and tabulate params, MACs, speed, top-1",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"} or args[0] not in COMMANDS:
        usage = "\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items())
        print(f"usage: python -m minilg <command> [options]\n\ncommands:\n{usage}")
        if args and args[0] not in {"-h", "--help"}:
            print(f"\nerror: unknown command {args[0]!r}", file=sys.stderr)
            return 2
        return 0
    command, rest = args[0], args[1:]
    if command == "list":
        from minilg.registry import list_models

        print("\n".join(list_models(rest[0] if rest else "*")))
        return 0
    if command == "info":
        from minilg.info import cli_info

        return cli_info(rest)
    from minilg import train

    handler = {"train": train.cli_train, "eval": train.cli_eval, "compare": train.cli_compare}
    return handler[command](rest)


if __name__ == "__main__":
    sys.exit(main())
