// Passkey login and registration (WebAuthn). Served from our origin: the CSP allows
// script-src 'self' on these pages only. The server keeps the challenge; we only relay.
"use strict";
(function () {
  function b64urlToBuf(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)).buffer;
  }
  function bufToB64url(buf) {
    let s = "";
    new Uint8Array(buf).forEach((b) => { s += String.fromCharCode(b); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function showError(text) {
    const el = document.getElementById("passkey-error");
    if (el) { el.textContent = text; el.hidden = false; }
  }
  async function post(url, body) {
    const r = await fetch(url, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await r.json();
    if (!r.ok && data.redirect) { window.location.assign(data.redirect); }
    if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
    return data;
  }
  async function login(btn) {
    const csrf = btn.dataset.csrf;
    const opts = await post(btn.dataset.options, { csrf: csrf });
    opts.challenge = b64urlToBuf(opts.challenge);
    (opts.allowCredentials || []).forEach((c) => { c.id = b64urlToBuf(c.id); });
    const cred = await navigator.credentials.get({ publicKey: opts });
    const r = cred.response;
    const credential = { id: cred.id, rawId: bufToB64url(cred.rawId), type: cred.type,
      response: { clientDataJSON: bufToB64url(r.clientDataJSON),
        authenticatorData: bufToB64url(r.authenticatorData), signature: bufToB64url(r.signature),
        userHandle: r.userHandle ? bufToB64url(r.userHandle) : null },
      clientExtensionResults: {}, authenticatorAttachment: cred.authenticatorAttachment };
    const done = await post(btn.dataset.verify, { csrf: csrf, credential: credential,
      mode: btn.dataset.mode, next: btn.dataset.next });
    window.location.assign(done.redirect);
  }
  async function register(btn) {
    const csrf = btn.dataset.csrf;
    const opts = await post(btn.dataset.options, { csrf: csrf });
    opts.challenge = b64urlToBuf(opts.challenge);
    opts.user.id = b64urlToBuf(opts.user.id);
    (opts.excludeCredentials || []).forEach((c) => { c.id = b64urlToBuf(c.id); });
    const cred = await navigator.credentials.create({ publicKey: opts });
    const r = cred.response;
    const credential = { id: cred.id, rawId: bufToB64url(cred.rawId), type: cred.type,
      response: { clientDataJSON: bufToB64url(r.clientDataJSON),
        attestationObject: bufToB64url(r.attestationObject),
        transports: r.getTransports ? r.getTransports() : [] },
      clientExtensionResults: {}, authenticatorAttachment: cred.authenticatorAttachment };
    const nameInput = document.getElementById("passkey-name");
    const done = await post(btn.dataset.verify, { csrf: csrf, credential: credential,
      name: nameInput ? nameInput.value : "Passkey", next: btn.dataset.next || "",
      flow: btn.dataset.flow || "" });
    window.location.assign(done.redirect);
  }
  function wire(id, fn) {
    const btn = document.getElementById(id);
    if (!btn) return;
    if (!window.PublicKeyCredential) { btn.disabled = true; return; }
    btn.addEventListener("click", () => { fn(btn).catch((e) => showError(e.message)); });
  }
  wire("passkey-login", login);
  wire("passkey-register", register);
})();
