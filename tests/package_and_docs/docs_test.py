"""Every ```python block of README.md and docs/*.md runs as written.

A page's blocks run in order, in one namespace, in a fresh process (each page configures its own
logical devices, as a reader would) whose working directory is a scratch folder, so the files a
snippet saves go nowhere near the repository. A traceback names the page and its line.

A block that truly cannot run here (it needs GPUs, say) is preceded by
`<!-- not-run: <reason> -->`; `test_not_run_blocks_are_few_and_listed` prints them and keeps
the list short.

Also: relative links resolve, the README stays a front page, and docs/troubleshooting.md has an
entry for every error message the package and the trainers raise.
"""

import ast
import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap

import tensorflow as tf
from absl.testing import parameterized

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PAGES = ["README.md"] + sorted(
    os.path.relpath(path, _REPOSITORY)
    for path in glob.glob(os.path.join(_REPOSITORY, "docs", "*.md"))
)
_MAX_NOT_RUN = 3
_README_MAX_BYTES = 12 * 1024

_BLOCK = re.compile(
    r"(?:<!--\s*not-run:\s*(?P<reason>.*?)\s*-->[ \t]*\n)?^```python[ \t]*\n(?P<code>.*?)^```",
    re.DOTALL | re.MULTILINE,
)
_LINK = re.compile(r"\]\((?!https?://|mailto:|#)(?P<target>[^)\s#]+)(?:#[^)]*)?\)")

# Runs each block with the page's line numbers, so a traceback points into the Markdown file.
_RUNNER = """
import json, sys
namespace = {"__name__": "__main__"}
for block in json.load(open(sys.argv[1])):
    code = "\\n" * (block["line"] - 1) + block["code"]
    exec(compile(code, block["page"], "exec"), namespace)
"""


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the block's first code line, 1-based
    code: str
    not_run_reason: str | None


def _read(page: str) -> str:
    with open(os.path.join(_REPOSITORY, page), encoding="utf-8") as file:
        return file.read()


def python_blocks(page: str) -> list[Block]:
    text = _read(page)
    return [
        Block(
            page=page,
            line=text.count("\n", 0, match.start("code")) + 1,
            code=match.group("code"),
            not_run_reason=match.group("reason"),
        )
        for match in _BLOCK.finditer(text)
    ]


def _source_tree() -> str:
    """The real checkout (under Bazel, runfiles are symlinks into it)."""
    return os.path.dirname(os.path.realpath(os.path.join(_REPOSITORY, "README.md")))


def _render(node: ast.AST) -> str | None:
    """A string literal as the message it makes, f-string fields as "<>"; None if not a string."""
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else "<>" for part in node.values
        )
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _python_trees(*folders: str):
    for folder in folders:
        pattern = os.path.join(_source_tree(), folder, "**", "*.py")
        for path in sorted(glob.glob(pattern, recursive=True)):
            with open(path, encoding="utf-8") as file:
                yield os.path.relpath(path, _source_tree()), ast.parse(file.read())


def _string_literals(*folders: str) -> list[str]:
    """Every string literal of the Python files in `folders`, f-string fields as "<>"."""
    return [
        literal
        for _, tree in _python_trees(*folders)
        for node in ast.walk(tree)
        if (literal := _render(node)) is not None
    ]


def _raised_messages(*folders: str) -> list[tuple[str, str]]:
    """(where, message) of every `raise SomethingError("message", ...)` in `folders`."""
    raised = []
    for path, tree in _python_trees(*folders):
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            name = ast.unparse(node.exc.func)
            message = _render(node.exc.args[0]) if node.exc.args else None
            if name.endswith("Error") and message is not None:
                raised.append((f"{path}:{node.lineno} {name}", message))
    return raised


class DocsTest(tf.test.TestCase, parameterized.TestCase):
    def _run_blocks(self, blocks: list[Block]) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as scratch:
            blocks_file = os.path.join(scratch, "blocks.json")
            with open(blocks_file, "w", encoding="utf-8") as file:
                json.dump(
                    [
                        {"page": os.path.join(_REPOSITORY, b.page), "line": b.line, "code": b.code}
                        for b in blocks
                    ],
                    file,
                )
            result = subprocess.run(
                [sys.executable, "-c", _RUNNER, blocks_file],
                cwd=scratch,
                capture_output=True,
                text=True,
                timeout=600,
                env=dict(os.environ, PYTHONPATH=_REPOSITORY, TF_CPP_MIN_LOG_LEVEL="2"),
                check=False,
            )
        self.assertEqual(result.returncode, 0, result.stderr[-4000:])
        return result

    @parameterized.named_parameters(
        (re.sub(r"\W", "_", page.removesuffix(".md")), page) for page in _PAGES
    )
    def test_python_blocks_run_as_written(self, page):
        blocks = [block for block in python_blocks(page) if block.not_run_reason is None]
        if not blocks:
            self.skipTest(f"{page} has no Python block to run.")
        self._run_blocks(blocks)

    def test_not_run_blocks_are_few_and_listed(self):
        not_run = [
            block for page in _PAGES for block in python_blocks(page) if block.not_run_reason
        ]
        listing = "\n".join(f"  {b.page}:{b.line}: {b.not_run_reason}" for b in not_run)
        print(f"\n{len(not_run)} documented Python block(s) not run:\n{listing}")
        self.assertLessEqual(len(not_run), _MAX_NOT_RUN, listing)

    def test_readme_is_a_front_page(self):
        size = len(_read("README.md").encode("utf-8"))
        self.assertLessEqual(size, _README_MAX_BYTES, "Move detail from README.md to docs/.")

    @parameterized.named_parameters(
        (re.sub(r"\W", "_", page.removesuffix(".md")), page) for page in _PAGES
    )
    def test_relative_links_resolve(self, page):
        base = os.path.dirname(os.path.join(_source_tree(), page))
        missing = [
            match.group("target")
            for match in _LINK.finditer(_read(page))
            if not os.path.exists(os.path.join(base, match.group("target")))
        ]
        self.assertEmpty(missing, f"{page} links to files that do not exist")

    def test_troubleshooting_quotes_messages_the_code_raises(self):
        """Each ``### ``Error: message`` `` heading quotes a message the code can raise."""
        page = os.path.join("docs", "troubleshooting.md")
        headings = re.findall(r"^### ``\w+: (.+?)``[ \t]*$", _read(page), re.MULTILINE)
        self.assertNotEmpty(headings)
        messages = _string_literals("replica_strategy", "examples")
        unquoted = [
            heading
            for heading in headings
            if not any(
                all(part in message for part in _fixed_parts(heading)) for message in messages
            )
        ]
        self.assertEmpty(unquoted, f"{page}: no message in the code contains these headings")

    def test_troubleshooting_has_every_message_the_code_raises(self):
        page = os.path.join("docs", "troubleshooting.md")
        headings = re.findall(r"^### ``\w+: (.+?)``[ \t]*$", _read(page), re.MULTILINE)
        missing = [
            f"  {where}: {message[:100]}"
            for where, message in _raised_messages("replica_strategy", "examples")
            if not any(
                all(part in message for part in _fixed_parts(heading)) for heading in headings
            )
        ]
        self.assertEmpty(
            missing,
            f"Add a ### ``Error: message`` entry with the fix to {page} for:\n"
            + "\n".join(missing),
        )

    def test_strategy_docstring_example_prints_what_it_says(self):
        import replica_strategy  # noqa: PLC0415

        code = re.findall(r"```python\n(.*?)```", replica_strategy.ReplicaStrategy.__doc__, re.S)
        preamble = textwrap.dedent("""
            import tensorflow as tf
            import replica_strategy

            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2
            )
            """)
        block = Block("docstring", 1, preamble + textwrap.dedent(code[0]), None)
        output = self._run_blocks([block]).stdout
        self.assertIn("numpy=0", output)
        self.assertIn("numpy=1", output)
        self.assertIn("[0 0 1 1]", output)

    def test_split_page_quotes_the_auto_split_constants(self):
        from replica_strategy import _auto_split  # noqa: PLC0415

        with open(os.path.join(_REPOSITORY, "docs", "split.md"), encoding="utf-8") as page:
            quoted = dict(re.findall(r"`([A-Z_]+)` = ([0-9.]+)", page.read()))
        names = [
            "WARM_UP_STEPS",
            "MEASUREMENTS_BEFORE_MOVING",
            "DEADBAND",
            "SETTLED",
            "DAMPING",
            "LARGEST_MOVE",
            "FLOOR_OF_EVEN_SHARE",
            "MIN_RESPONSE",
            "RECOVERY",
        ]
        self.assertCountEqual(quoted, names)
        for name in names:
            self.assertEqual(float(quoted[name]), getattr(_auto_split, name), name)


def _fixed_parts(heading: str) -> list[str]:
    """The literal pieces of a heading around its <placeholders> and "...": `a <x> b` -> a, b."""
    return [part.strip() for part in re.split(r"<[^<>]*>|\.\.\.", heading) if part.strip()]


if __name__ == "__main__":
    tf.test.main()


_TEST_REFERENCE = re.compile(r"([\w/]+_test\.py)::(\w+)")


def _named_tests() -> list[tuple[str, str, str]]:
    """(where, test file, name) for every `x_test.py::name` the docs and the package cite."""
    sources = [os.path.join(_REPOSITORY, page) for page in _PAGES] + sorted(
        glob.glob(os.path.join(_REPOSITORY, "replica_strategy", "*.py"))
    )
    named = []
    for path in sources:
        with open(path, encoding="utf-8") as source:
            for test_file, name in _TEST_REFERENCE.findall(source.read()):
                named.append((os.path.relpath(path, _REPOSITORY), test_file, name))
    return named


class NamedTestsTest(tf.test.TestCase):
    def test_every_cited_test_exists(self):
        # A docstring or a page that points a maintainer at a test must point at a real one.
        test_files = glob.glob(
            os.path.join(_REPOSITORY, "tests", "**", "*_test.py"), recursive=True
        )
        missing = []
        for where, test_file, name in _named_tests():
            # An upstream runner (`upstream_<file>`) runs the tests of upstream's `<file>`.
            vendored = "/" + os.path.basename(test_file).removeprefix("upstream_")
            candidates = [
                path
                for path in test_files
                if path.endswith("/" + test_file)
                or ("/upstream/" in path and path.endswith(vendored))
            ]
            defined = re.compile(rf"^\s*(?:def|class) {re.escape(name)}\b", re.MULTILINE)
            if not any(
                defined.search(_read(os.path.relpath(path, _REPOSITORY))) for path in candidates
            ):
                missing.append(f"{where}: {test_file}::{name}")
        self.assertNotEmpty(_named_tests())
        self.assertEqual(missing, [], "cited tests that do not exist")


class SelfContainedTest(tf.test.TestCase):
    def test_no_file_cites_notes_outside_the_repository(self):
        # The design notes the project started from are not in the repository: what a file
        # needs from them is said where it is used.
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=_REPOSITORY, capture_output=True, text=True, check=False
        ).stdout.split()
        if not tracked:
            self.skipTest("not a git checkout")
        outside = re.compile(
            r"/work/shared|\.\./shared/|\bDESIGN(?:_MIRROR_WEIGHTS)?\.md|MULTI_WORKER\.md"
        )
        citing = []
        for path in tracked:
            full = os.path.join(_REPOSITORY, path)
            if full == os.path.abspath(__file__):
                continue  # Its pattern names them.
            if not path.endswith((".py", ".md", ".toml", "BUILD", ".txt")) or not os.path.isfile(
                full
            ):
                continue
            with open(full, encoding="utf-8", errors="replace") as source:
                if outside.search(source.read()):
                    citing.append(path)
        self.assertEqual(citing, [])
