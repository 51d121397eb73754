"""A sample application tree like an invoicing SaaS's: certificates, uploads, .env, logs, config.

Deterministic (seeded) so reruns produce identical files; binary files carry real magic bytes
so the archiver's "already compressed → STORED" rule sees realistic input.
"""

from __future__ import annotations

import random
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_HEADER = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"


def build_sample_app(root: Path, *, uploads: int = 60, seed: int = 7) -> Path:
    """Create (or refresh) the tree under ``root`` and return it; existing files are rewritten identically."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {
        ".env": (
            b"APP_NAME=Invoicing\nAPP_ENV=production\nAPP_KEY=base64:ZGVtby1rZXktbm90LWEtc2VjcmV0\n"
            b"DB_CONNECTION=pgsql\nDB_HOST=127.0.0.1\nDB_DATABASE=invoicing\nMAIL_MAILER=smtp\n"
        ),
        "config/app.php": b"<?php\nreturn ['name' => env('APP_NAME'), 'timezone' => 'UTC'];\n",
        "config/database.php": b"<?php\nreturn ['default' => env('DB_CONNECTION', 'pgsql')];\n",
        "config/backup.php": b"<?php\n// migrated to backup-ops: include/backup_config.yaml\nreturn [];\n",
        "storage/app/certificates/tls/invoicing.example.com.pem": _pem(rng, "CERTIFICATE"),
        "storage/app/certificates/tls/invoicing.example.com.key": _pem(rng, "PRIVATE KEY"),
        "storage/app/certificates/qes/signing-certificate.p12": rng.randbytes(3_456),
        "storage/framework/cache/data/ab/cd/cache-entry": b"excluded: framework cache\n",
        "storage/framework/sessions/session-1": b"excluded: sessions\n",
    }
    for day in range(1, 8):
        lines = [f"[2026-11-{day:02d} 0{h % 10}:{m:02d}:00] production.INFO: invoice "
                 f"INV-{day:02d}{h:02d}{m:02d} sent to customer {rng.randint(1, 5000)}" for h in range(24) for m in
                 range(0, 60, 3)]
        files[f"storage/logs/laravel-2026-11-{day:02d}.log"] = ("\n".join(lines) + "\n").encode()
    for n in range(1, uploads + 1):
        if n % 3 == 0:
            logo = PNG_MAGIC + rng.randbytes(rng.randint(2, 40) * 1024)
            files[f"storage/app/public/uploads/logos/company-{n}.png"] = logo
        else:
            files[f"storage/app/public/uploads/invoices/2026/11/INV-{n:05d}.pdf"] = (
                PDF_HEADER + rng.randbytes(rng.randint(20, 120) * 1024) + b"\n%%EOF\n"
            )
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
    (root / "storage/app/public/uploads/empty-folder").mkdir(parents=True, exist_ok=True)
    return root


def _pem(rng: random.Random, kind: str) -> bytes:
    import base64

    body = base64.encodebytes(rng.randbytes(900)).decode()
    return f"-----BEGIN {kind}-----\n{body}-----END {kind}-----\n".encode()
