// AWS Signature Version 4 for the browser (WebCrypto), as API Gateway's IAM authorization checks it.
// https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
// Signs host, x-amz-date (and x-amz-security-token with temporary credentials) and the payload's SHA-256.

const encoder = new TextEncoder();

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256Hex(text) {
  return hex(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

async function hmac(key, text) {
  const raw = typeof key === "string" ? encoder.encode(key) : key;
  const imported = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", imported, encoder.encode(text)));
}

// RFC 3986 encoding of each path segment of the (already encoded) path: the "encode twice" rule of every
// service but S3, as botocore applies it.
function canonicalPath(pathname) {
  return pathname.split("/").map((segment) => encodeURIComponent(segment).replace(/[!'()*]/g,
    (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase())).join("/") || "/";
}

function canonicalQuery(search) {
  const query = search.startsWith("?") ? search.slice(1) : search;
  if (!query) return "";
  return query.split("&").map((pair) => {
    const at = pair.indexOf("=");
    return at < 0 ? [pair, ""] : [pair.slice(0, at), pair.slice(at + 1)];
  }).sort((a, b) => (a[0] === b[0] ? (a[1] < b[1] ? -1 : 1) : (a[0] < b[0] ? -1 : 1)))
    .map(([k, v]) => `${k}=${v}`).join("&");
}

export function amzDate(now = new Date()) {
  return now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

// The headers to add to a request: Authorization, X-Amz-Date and, for temporary credentials, X-Amz-Security-Token.
export async function sigv4Headers({ method, url, body = "", region, service = "execute-api", credentials,
                                     now = new Date() }) {
  const target = new URL(url);
  const stamp = amzDate(now);
  const day = stamp.slice(0, 8);
  const headers = { host: target.host, "x-amz-date": stamp };
  if (credentials.sessionToken) headers["x-amz-security-token"] = credentials.sessionToken;
  const names = Object.keys(headers).sort();
  const canonical = [
    method.toUpperCase(),
    canonicalPath(target.pathname),
    canonicalQuery(target.search),
    names.map((n) => `${n}:${String(headers[n]).trim()}\n`).join(""),
    names.join(";"),
    await sha256Hex(body),
  ].join("\n");
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", stamp, scope, await sha256Hex(canonical)].join("\n");
  let key = await hmac(`AWS4${credentials.secretAccessKey}`, day);
  for (const part of [region, service, "aws4_request"]) key = await hmac(key, part);
  const signature = hex(await hmac(key, toSign));
  const signed = { "X-Amz-Date": stamp,
    Authorization: `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, ` +
                   `SignedHeaders=${names.join(";")}, Signature=${signature}` };
  if (credentials.sessionToken) signed["X-Amz-Security-Token"] = credentials.sessionToken;
  return signed;
}
