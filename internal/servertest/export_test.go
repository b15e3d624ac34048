package servertest

// PGBin is pgBin, for the tests.
var PGBin = pgBin
