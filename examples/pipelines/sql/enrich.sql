-- Joins each transaction to its merchant's category and risk tier (a small lookup table).
SELECT t.id, t.merchant, m.category, m.risk_tier, t.amount, t.latency_ms,
       t.amount * m.risk_tier AS weighted_amount
FROM tx t
JOIN merchants m ON t.merchant = m.merchant
WHERE t.amount IS NOT NULL
