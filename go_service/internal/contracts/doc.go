// Package contracts holds tests of the generated Go code for every proto
// package in protos/shop: that each one is importable and survives the wire
// format. It has no code of its own.
package contracts
