"""The vendored upstream files are upstream's, byte for byte: their git blob ids are those at the pin.

Each UPSTREAM.md lists its folder's files with the blob id upstream's repository has for them at
the pinned commit (`git ls-tree <commit> <path>`); a file edited, reformatted or truncated here
has another id. Offline: nothing is fetched.
"""

import hashlib
import pathlib
import re
import unittest

_HERE = pathlib.Path(__file__).resolve().parent
_ROW = re.compile(r"^\| `(?P<path>[^`]+\.py)` \| `(?P<blob>[0-9a-f]{40})` \|$", re.MULTILINE)


def _blob_id(path):
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class VendoredFilesTest(unittest.TestCase):
    def test_every_vendored_file_is_upstreams(self):
        for folder in ("keras", "tf_keras"):
            rows = _ROW.findall((_HERE / folder / "UPSTREAM.md").read_text())
            self.assertTrue(rows, f"{folder}/UPSTREAM.md lists no vendored file.")
            for path, blob in rows:
                with self.subTest(file=f"{folder}/{path}"):
                    self.assertEqual(_blob_id(_HERE / folder / path), blob)

    def test_every_python_file_of_a_vendored_folder_is_listed(self):
        for folder, vendored in (("keras", "src"), ("tf_keras", "distribute")):
            listed = {
                path for path, _ in _ROW.findall((_HERE / folder / "UPSTREAM.md").read_text())
            }
            present = {
                str(p.relative_to(_HERE / folder))
                for p in (_HERE / folder / vendored).rglob("*.py")
            }
            self.assertEqual(present, listed, f"{folder}/UPSTREAM.md's table")


if __name__ == "__main__":
    unittest.main()
