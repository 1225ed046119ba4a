# Sourced by scripts/bench-sign and scripts/bench-sign-ab: a custos in $W, set
# up by the binary $1, with the custodied connections bench/es256 (P-256) and
# bench/ps256 (RSA-2048) and their policy, a listener certificate for
# 127.0.0.1 ($W/tls-full.pem, $W/tls/key.pem; $W/ca2.pem is the root), a
# token per connection (ES_TOKEN, PS_TOKEN) and an assertion request
# ($W/assert/1.json). Exports CUSTOS_DATA, CUSTOS_PASSPHRASE, CUSTOS_CONFIG.
sign_setup() {
    local custos=$1
    AUD=https://login.microsoftonline.example/bench/oauth2/v2.0/token
    APP=6731de76-14a6-49ae-97bc-6eba6914391e
    export CUSTOS_DATA=$W/data CUSTOS_PASSPHRASE='bench passphrase for the signing run'
    printf '[serve]\napi_requests_per_second = 1000000\napi_burst = 1000000\nsign_requests_per_second = 1000000\n' > "$W/custos.toml"
    export CUSTOS_CONFIG=$W/custos.toml
    $custos init >/dev/null 2>&1
    $custos tenant add bench >/dev/null
    local c
    for c in es256:p256 ps256:rsa2048; do
        $custos connection add bench "${c%%:*}" --custody --key-algorithm "${c##*:}" --no-standby >/dev/null
        $custos connection policy bench "${c%%:*}" --audience "$AUD" --client-id "$APP" >/dev/null
    done
    $custos tenant add listener >/dev/null
    $custos connection add listener tls --profile server --allow-san 127.0.0.1 >/dev/null
    $custos issue listener tls --san 127.0.0.1 --out "$W/tls" >/dev/null
    awk '/BEGIN/{n++} {print > "'"$W"'/ca" n ".pem"}' "$W/tls/chain.pem"   # ca1 = issuing, ca2 = root
    cat "$W/tls/cert.pem" "$W/ca1.pem" > "$W/tls-full.pem"
    ES_TOKEN=$($custos token create --role tenant --tenant bench --connection es256 2>/dev/null)
    PS_TOKEN=$($custos token create --role tenant --tenant bench --connection ps256 2>/dev/null)
    mkdir -p "$W/assert"
    printf '{"aud": "%s", "iss": "%s", "sub": "%s"}' "$AUD" "$APP" "$APP" > "$W/assert/1.json"
}
