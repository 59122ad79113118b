package oauth

// StatusAt is Status at a fixed time, for the golden test.
var StatusAt = status
