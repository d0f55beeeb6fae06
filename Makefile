bench:
	./dev bench

bench-quick:
	./dev bench --quick

.PHONY: bench bench-quick
