module setec.bench/goref

go 1.22
