"""Adds the certificates of a PEM bundle that the image does not trust yet, one file each, to
/usr/local/share/ca-certificates (update-ca-certificates then adds them to the system bundle)."""

import re
import sys
from pathlib import Path

PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LOCAL_DIR = Path("/usr/local/share/ca-certificates")


def main(bundle: str) -> None:
    known = set(PEM.findall(SYSTEM_BUNDLE.read_text())) if SYSTEM_BUNDLE.exists() else set()
    extra = [pem for pem in PEM.findall(Path(bundle).read_text()) if pem not in known]
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    for number, pem in enumerate(extra):
        (LOCAL_DIR / f"build-host-{number}.crt").write_text(pem + "\n")
    print(f"add-ca-certificates: {len(extra)} extra certificate(s)")


if __name__ == "__main__":
    main(sys.argv[1])
