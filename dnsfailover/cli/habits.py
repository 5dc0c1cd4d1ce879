"""What users of kubectl, terraform and octoDNS expect of a command, all generated from the
one argparse parser: an "examples:" epilog per command, shell completion
(`dnsfailover completion bash|zsh`) and a man page (`dnsfailover man`)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

from dnsfailover import __version__
from dnsfailover.cli.args import CONFIG_ENV

CFG = "config/example.yaml"

#: command -> (example command line, what it does); shown under "examples:" in --help and in
#: the man page
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "": [  # the command itself
        (f"dnsfailover validate {CFG}", "check a config"),
        (f"dnsfailover serve {CFG}", "run a node"),
        ("dnsfailover status", "ask the running node"),
        ("dnsfailover COMMAND --help", "a command's options and examples"),
    ],
    "validate": [
        (f"dnsfailover validate {CFG}", "check a config; exit 2 listing every problem"),
        (f"dnsfailover validate {CFG} --json", "the problems as JSON (file, line, path)"),
        (f"{CONFIG_ENV}={CFG} dnsfailover validate", "the config from the environment"),
    ],
    "serve": [
        (f"dnsfailover serve {CFG}", "DNS on 127.0.0.1:5353, API on 127.0.0.1:8053"),
        (
            f"dnsfailover serve {CFG} --dns 0.0.0.0:53 --state /var/lib/dnsfailover/state.db",
            "a production node",
        ),
    ],
    "plan": [
        (f"dnsfailover plan {CFG}", "probe once; show answers and provider changes"),
        (f"dnsfailover plan {CFG} --json", "the same as JSON: changes per zone"),
        (
            f"dnsfailover plan {CFG} --detailed-exitcode",
            "exit 0 no changes, 2 changes, 1 error (as terraform)",
        ),
    ],
    "apply": [
        (f"dnsfailover apply {CFG}", "push each external zone's plan once"),
        (f"dnsfailover apply {CFG} --force", "even an unsafe plan"),
    ],
    "simulate": [
        (f"dnsfailover simulate {CFG} --down us-east", "what if region us-east went down"),
        (f"dnsfailover simulate {CFG} --down 127.0.0.11 --json | head", "as JSON"),
    ],
    "status": [("dnsfailover status", "every name's answer and health, zones and serials")],
    "endpoints": [("dnsfailover endpoints --json", "every endpoint's health as JSON")],
    "explain": [("dnsfailover explain www", "why www answers what it answers")],
    "events": [("dnsfailover events --limit 20", "the 20 newest events")],
    "drain": [
        (
            "dnsfailover drain 127.0.0.11 --reason 'kernel update' --expires 1h",
            "out of answers for an hour",
        )
    ],
    "undrain": [("dnsfailover undrain 127.0.0.11 --reason done", "back into answers")],
    "force": [
        ("dnsfailover force down 127.0.0.11 --reason 'bad deploy'", "down whatever checks say"),
        ("dnsfailover force down --tier us-east --name api --reason test", "a whole tier"),
    ],
    "failover": [("dnsfailover failover api --reason 'db migration'", "to the next tier")],
    "failback": [("dnsfailover failback api --reason 'migration done'", "to the best tier")],
    "reload": [("dnsfailover reload", "re-read the config (as SIGHUP)")],
    "reset-breaker": [("dnsfailover reset-breaker --reason 'checked'", "release the breaker")],
    "sync": [("dnsfailover sync example.com.", "re-read the provider's zone and apply now")],
    "drill": [(f"dnsfailover drill {CFG} --tier us-east --for 2m", "a two-minute drill")],
    "demo": [("dnsfailover demo", "local endpoints and a server; watch a failover")],
    "completion": [
        ("source <(dnsfailover completion bash)", "in ~/.bashrc"),
        ("dnsfailover completion zsh > ~/.zfunc/_dnsfailover", "in a directory on $fpath"),
    ],
    "man": [("dnsfailover man | man -l -", "read this manual")],
    "import": [
        ("dnsfailover import example.com. --from-file db.example.com", "a BIND zone file"),
        (
            "dnsfailover import example.com. --axfr 192.0.2.53 --tsig-key-file xfr.key "
            "--config -o example.yaml",
            "a whole config from a zone transfer signed with TSIG",
        ),
        ("dnsfailover import example.com. --route53", "a Route 53 hosted zone"),
    ],
    "schema": [("dnsfailover schema -o config.schema.json", "the config's JSON Schema")],
    "dnssec": [
        (f"dnsfailover dnssec ds {CFG} example.test.", "the DS records for the parent"),
        (
            f"dnsfailover dnssec keys {CFG} example.test. --state /var/lib/dnsfailover/state.db",
            "the zone's keys, their states and times, and the rollovers in progress",
        ),
        (f"dnsfailover dnssec rollover {CFG} example.test.", "start a KSK or CSK rollover"),
        (
            f"dnsfailover dnssec rollover {CFG} example.test. --complete --parent 192.0.2.53",
            "complete it once the parent's server serves the new DS",
        ),
    ],
}


def epilog(command: str) -> str | None:
    rows = EXAMPLES.get(command)
    if not rows:
        return None
    lines = ["examples:"]
    for line, what in rows:
        lines += [f"  # {what}", f"  {line}"]
    return "\n".join(lines)


def add_examples(
    root: argparse.ArgumentParser, sub: argparse._SubParsersAction[argparse.ArgumentParser]
) -> None:
    """Give the command and every subcommand its "examples:" epilog, kept as written."""
    root.epilog = epilog("")
    root.formatter_class = argparse.RawDescriptionHelpFormatter
    for name, sp in sub.choices.items():
        sp.epilog = epilog(name)
        sp.formatter_class = argparse.RawDescriptionHelpFormatter


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name:
                    return choice.help or ""
    return ""


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS:
            yield action


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


# -- bash ----------------------------------------------------------------------------------


def _bash_values(parser: argparse.ArgumentParser, indent: str) -> list[str]:
    """`case "$prev"` arms: an option's choices, or file names for any other value."""
    out: list[str] = []
    for action in _options(parser):
        if not _takes_value(action):
            continue
        names = "|".join(action.option_strings)
        if action.choices:
            words = " ".join(str(c) for c in action.choices)
            reply = f'COMPREPLY=($(compgen -W "{words}" -- "$cur"))'
        else:
            reply = 'COMPREPLY=($(compgen -f -- "$cur"))'
        out.append(f"{indent}{names}) {reply}; return ;;")
    return out


def bash(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    fn = "_" + re.sub(r"\W", "_", prog)
    commands = subcommands(parser)
    top_opts = " ".join(o for a in _options(parser) for o in a.option_strings)
    skip = "|".join(o for a in _options(parser) if _takes_value(a) for o in a.option_strings)
    lines = [
        f"# bash completion for {prog}, generated from its parser by `{prog} completion bash`",
        f"# use: source <({prog} completion bash)",
        f"{fn}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local cmd="" i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in',
        *([f"            {skip}) ((i++)) ;;"] if skip else []),
        "            -*) ;;",
        '            *) cmd="${COMP_WORDS[i]}"; break ;;',
        "        esac",
        "    done",
        "    COMPREPLY=()",
        '    case "$cmd" in',
        '        "")',
        '            case "$prev" in',
        *_bash_values(parser, "                "),
        "            esac",
        f'            COMPREPLY=($(compgen -W "{" ".join(commands)} {top_opts}" -- "$cur")) ;;',
    ]
    for name, sp in commands.items():
        opts = " ".join(o for a in _options(sp) for o in a.option_strings)
        positional = _positionals(sp)
        choices = [str(c) for a in positional if a.choices for c in a.choices]
        rest = (
            f'COMPREPLY=($(compgen -W "{" ".join(choices)}" -- "$cur"))'
            if choices
            else 'COMPREPLY=($(compgen -f -- "$cur"))'
            if positional
            else ":"
        )
        lines += [
            f"        {name})",
            '            case "$prev" in',
            *_bash_values(sp, "                "),
            "            esac",
            '            if [[ "$cur" == -* ]]; then',
            f'                COMPREPLY=($(compgen -W "{opts}" -- "$cur"))',
            "            else",
            f"                {rest}",
            "            fi ;;",
        ]
    lines += ["    esac", "}", f"complete -o filenames -F {fn} {prog}", ""]
    return "\n".join(lines)


# -- zsh -----------------------------------------------------------------------------------


def _zsh_text(text: str) -> str:
    """Help text safe inside a single-quoted `_arguments` spec: `[...]`, `:` and quotes out."""
    text = text.split(";")[0].strip()
    text = text.replace("[", "(").replace("]", ")").replace(":", " -").replace("'", "")
    return text.replace("\\", "").replace("$", "")


def _zsh_specs(parser: argparse.ArgumentParser) -> list[str]:
    specs: list[str] = []
    for action in _options(parser):
        names = action.option_strings
        what = _zsh_text(action.help or "")
        head = f"'{names[0]}[{what}]" if len(names) == 1 else (
            f"'({' '.join(names)})'{{{','.join(names)}}}'[{what}]"
        )  # fmt: skip
        if _takes_value(action):
            meta = _zsh_text(str(action.metavar or action.dest.upper()))
            values = f"({' '.join(str(c) for c in action.choices)})" if action.choices else "_files"
            head += f":{meta}:{values}"
        specs.append(head + "'")
    for action in _positionals(parser):
        meta = _zsh_text(str(action.metavar or action.dest))
        values = f"({' '.join(str(c) for c in action.choices)})" if action.choices else "_files"
        optional = ":" if action.nargs == "?" else ""
        specs.append(f"'{optional}:{meta}:{values}'")
    return specs


def zsh(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    fn = "_" + re.sub(r"\W", "_", prog)
    commands = subcommands(parser)
    described = [f"        '{n}:{_zsh_text(_help_of(parser, n))}'" for n in commands]
    lines = [
        f"#compdef {prog}",
        f"# zsh completion for {prog}, generated from its parser by `{prog} completion zsh`",
        f"# use: {prog} completion zsh > DIR/_{prog}, with DIR on $fpath",
        f"{fn}() {{",
        '    local curcontext="$curcontext" state line',
        "    local -a commands",
        "    commands=(",
        *described,
        "    )",
        "    _arguments -C \\",
        *(f"        {s} \\" for s in _zsh_specs(parser)),
        "        '1: :->command' \\",
        "        '*:: :->args'",
        "    case $state in",
        "        command) _describe -t commands 'command' commands ;;",
        "        args)",
        "            case $words[1] in",
    ]
    for name, sp in commands.items():
        specs = " ".join(_zsh_specs(sp))
        lines.append(f"                {name}) _arguments {specs} ;;")
    lines += ["            esac ;;", "    esac", "}", f'{fn} "$@"', ""]
    return "\n".join(lines)


# -- man -----------------------------------------------------------------------------------


def _roff(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().removeprefix("usage:").split())


def _man_options(parser: argparse.ArgumentParser, skip: set[str]) -> list[str]:
    out: list[str] = []
    for action in _options(parser):
        if action.dest in skip:
            continue
        flags = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
        if _takes_value(action):
            flags += f" \\fI{_roff(str(action.metavar or action.dest.upper()))}\\fR"
        out += [".TP", flags, _roff(action.help or "")]
    for action in _positionals(parser):
        name = str(action.metavar or action.dest)
        what = action.help or (
            f"one of: {', '.join(map(str, action.choices))}" if action.choices else ""
        )
        out += [".TP", f"\\fI{_roff(name)}\\fR", _roff(what)]  # fmt: skip
    return out


def man(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    common = {"help", "debug", "log_level", "log_format"}
    lines = [
        f'.TH {prog.upper()} 1 "" "{prog} {__version__}" "User Commands"',
        ".SH NAME",
        f"{prog} \\- {_roff(parser.description or '')}",
        ".SH SYNOPSIS",
        f".B {prog}",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        _roff(
            f"{prog} probes endpoints, decides each managed name's answer and serves it over "
            "DNS or pushes it to a provider. Every command takes --help; the options below are "
            "accepted before or after the command."
        ),
        ".SH OPTIONS",
        *_man_options(parser, set()),
        ".SH COMMANDS",
    ]
    for name, sp in subcommands(parser).items():
        lines += [f'.SS "{_roff(name)}"', _roff(_help_of(parser, name)), ".PP"]
        lines += [f"\\fB{_roff(_usage(sp))}\\fR"]
        lines += _man_options(sp, common)
        for line, what in EXAMPLES.get(name, []):
            lines += [".PP", _roff(what) + ":", ".RS", ".nf", _roff(line), ".fi", ".RE"]
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        f"\\fB{CONFIG_ENV}\\fR",
        _roff("the config file of every command that takes CONFIG, when CONFIG is left out"),
        ".TP",
        "\\fBDNSFAILOVER_API\\fR",
        _roff("the API base URL of the operator commands (default http://127.0.0.1:8053)"),
        ".TP",
        "\\fBDNSFAILOVER_API_TOKEN\\fR",
        _roff("the bearer token of the commands that change things"),
        ".SH EXIT STATUS",
        ".TP",
        "0",
        "done (plan \\-\\-detailed\\-exitcode: no changes)",
        ".TP",
        "1",
        _roff("it ran and failed: unreachable, refused, an endpoint or provider failed"),
        ".TP",
        "2",
        _roff(
            "the input is wrong: a bad config, argument or request "
            "(plan --detailed-exitcode: changes to make)"
        ),
        ".SH SEE ALSO",
        "README.md and docs/ in the source distribution.",
        "",
    ]
    return "\n".join(lines)


def add_parsers(
    root: argparse.ArgumentParser,
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """`completion SHELL` and `man`, which print what `root` generates."""

    def show(args: argparse.Namespace) -> int:
        if args.command == "man":
            print(man(root), end="")
        else:
            print(bash(root) if args.shell == "bash" else zsh(root), end="")
        return 0

    about = "print a shell completion script (bash or zsh), generated from this parser"
    sp = sub.add_parser("completion", help=about, description=about, parents=parents)
    sp.add_argument("shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh")
    sp.set_defaults(func=show)
    about = "print the manual page (roff), generated from this parser"
    sp = sub.add_parser("man", help=about, description=about, parents=parents)
    sp.set_defaults(func=show)
