"""Signs or verifies one message with python3-dkim (dkimpy), for sluice's
interoperability tests. Reads a JSON object on stdin:

  {"op": "sign", "msg": B64, "domain": D, "selector": S, "key": KEY,
   "alg": "rsa-sha256"|"ed25519-sha256", "canon": "relaxed/relaxed",
   "length": false}
      prints the DKIM-Signature field, base64 (KEY: PKCS#1 PEM for RSA, the
      base64 32-octet seed for Ed25519, as dkimpy wants them)
  {"op": "verify", "msgs": [B64, ...], "txt": {"NAME": "v=DKIM1; ..."}}
      prints "pass" or "fail" for each message, one a line: its first
      signature, with key records from txt only (no DNS)
"""
import base64, json, sys
import dkim

req = json.load(sys.stdin)
if req["op"] == "sign":
    msg = base64.b64decode(req["msg"])
    hc, bc = req.get("canon", "relaxed/relaxed").split("/")
    sig = dkim.sign(msg, req["selector"].encode(), req["domain"].encode(),
                    req["key"].encode(), canonicalize=(hc.encode(), bc.encode()),
                    signature_algorithm=req["alg"].encode(),
                    length=req.get("length", False))
    print(base64.b64encode(sig).decode())
elif req["op"] == "verify":
    txt = {k.rstrip(".").lower(): v for k, v in req["txt"].items()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        v = txt.get(name.rstrip(".").lower())
        return v.encode() if v is not None else None

    for m in req["msgs"]:
        print("pass" if dkim.verify(base64.b64decode(m), dnsfunc=dnsfunc) else "fail")
else:
    sys.exit("unknown op " + req["op"])
