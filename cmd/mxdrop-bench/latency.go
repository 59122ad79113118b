package main

import "errors"

func (b *bench) latency(rate, backlog int) error {
	return errors.New("latency mode: not written yet")
}
