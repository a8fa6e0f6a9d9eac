"""Journey analytics (read API): stage distribution, funnels, the channel by stage touchpoint
matrix, attribution and abandoned carts, computed in PostgreSQL over live customers."""
